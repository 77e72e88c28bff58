"""``nurture contacts export|erase EMAIL``: personal data (GDPR) from the command line.

Both are audited as ``cli:<os user>``; the erase asks for confirmation unless ``--yes``.
"""

from __future__ import annotations

import getpass
from pathlib import Path

import orjson
import typer

from nurture.bootstrap import Container
from nurture.cli.common import console, container, fail
from nurture.contacts import erasure
from nurture.core.events import normalise_email
from nurture.errors import NurtureError
from nurture.storage import contacts as contact_store

REF = typer.Argument(..., help="The contact's e-mail address (or numeric id)")


def cli_actor() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):  # no passwd entry (some containers)
        return "cli:unknown"


def _contact_id(c: Container, ref: str) -> int:
    if ref.strip().isdigit():
        return int(ref)
    email = normalise_email(ref)
    if email is None:
        fail(f"{ref!r} is neither an e-mail address nor a contact id")
    with c.db.read() as conn:
        found = contact_store.id_by_email(conn, email)
    if found is None:
        fail(f"no contact with e-mail {email}")
    return found


def export_cmd(
    ref: str = REF,
    output: Path | None = typer.Option(
        None, "--output", "-o", help="Write the JSON to this file instead of standard output"
    ),
) -> None:
    """Print everything held about a contact as JSON (GDPR access request). Audited."""
    # Open the file first: an export that cannot be written must not be audited as handed out.
    try:
        sink = output.open("wb") if output is not None else None
    except OSError as exc:
        fail(f"{output}: {exc.strerror}")
    c = container()
    try:
        data = erasure.export_contact(
            c.db, _contact_id(c, ref), actor=cli_actor(), now=c.clock.now()
        )
    except NurtureError as exc:
        if sink is not None and output is not None:
            sink.close()
            output.unlink(missing_ok=True)
        fail(str(exc))
    finally:
        c.close()
    text = orjson.dumps(data, option=orjson.OPT_INDENT_2)
    if sink is None:
        typer.echo(text.decode())
        return
    with sink:
        sink.write(text + b"\n")
    console.print(f"exported contact {data['contact']['id']} to {output}", highlight=False)


def erase_cmd(
    ref: str = REF,
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask for confirmation"),
) -> None:
    """Erase a contact's personal data (GDPR); only a hashed suppression of the address stays,
    so it is never mailed again. Audited. Cannot be undone (a backup still holds the data)."""
    c = container()
    try:
        contact_id = _contact_id(c, ref)
        if not yes and not typer.confirm(
            f"Erase contact {contact_id} ({ref})? This cannot be undone"
        ):
            fail("not erased", code=1)
        report = erasure.erase_contact(c.db, contact_id, actor=cli_actor(), now=c.clock.now())
    except NurtureError as exc:
        fail(str(exc))
    finally:
        c.close()
    d = report.deleted
    console.print(
        f"erased contact {report.contact_id}: {report.events_redacted} events and "
        f"{report.messages_redacted} messages blanked, {report.jobs_cancelled} jobs cancelled, "
        f"{d.get('timeline', 0)} timeline entries and {d.get('tasks', 0)} tasks deleted; "
        f"the address stays suppressed (audit entry {report.audit_id})",
        highlight=False,
    )


def register(contacts_app: typer.Typer) -> None:
    contacts_app.command("export")(export_cmd)
    contacts_app.command("erase")(erase_cmd)
