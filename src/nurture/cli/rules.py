"""``nurture rules export|import|test`` and ``nurture contacts explain``; ``check_automation``
is what ``nurture check`` calls."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import orjson
import typer
import yaml

from nurture.automation.step import explain
from nurture.cli.common import console, container, fail, settings
from nurture.core.events import normalise_email
from nurture.errors import NurtureError
from nurture.integrations.outbound import dry_run_as_run
from nurture.pack import resolve_dir
from nurture.rules.book import Automation, export_rules, from_specs, load
from nurture.rules.dryrun import contact_from_json, event_from_json
from nurture.rules.importer import import_rules
from nurture.storage import contacts as contact_store

__all__ = ["check_automation", "register"]

rules_app = typer.Typer(help="Automation rules: export, import, dry-run.", no_args_is_help=True)
contacts_app = typer.Typer(help="Contacts.", no_args_is_help=True)

DIR = typer.Option(
    None, "--dir", help="Automation folder [env NURTURE_AUTOMATION_DIR, ./automation, built-in]"
)


def check_automation(directory: Path | None) -> str:
    """Load and validate the rules, segments and scoring of a folder; a summary line."""
    root, is_default = resolve_dir(directory)
    automation = load(directory)
    where = "built-in default pack" if is_default else str(root)
    return f"{where}: {automation.summary()}"


def _automation(directory: Path | None) -> Automation:
    try:
        return load(directory or settings().automation_dir)
    except NurtureError as exc:
        fail(str(exc))


def _read_json(path: Path) -> Any:
    try:
        return orjson.loads(sys.stdin.buffer.read() if str(path) == "-" else path.read_bytes())
    except OSError as exc:
        fail(f"{path}: {exc.strerror}")
    except orjson.JSONDecodeError as exc:
        fail(f"{path}: invalid JSON: {exc}")


def _print_json(value: Any) -> None:
    typer.echo(orjson.dumps(value, option=orjson.OPT_INDENT_2, default=str).decode())


@rules_app.command("export")
def export_cmd(
    as_json: bool = typer.Option(True, "--json/--yaml", help="JSON (default) or YAML"),
    directory: Path | None = DIR,
) -> None:
    """Print the loaded rules (JSON, re-importable with `nurture rules import`)."""
    rules = export_rules(_automation(directory))
    if as_json:
        _print_json(rules)
    else:
        typer.echo(yaml.safe_dump({"rules": rules}, sort_keys=False, allow_unicode=True))


@rules_app.command("import")
def import_cmd(
    file: Path = typer.Argument(..., help="JSON from `rules export --json` or the prototype"),
    out: Path | None = typer.Option(None, "--out", help="Write rules YAML here (else stdout)"),
) -> None:
    """Turn exported rules JSON (ours or the prototype's) into a validated rules YAML file."""
    try:
        specs = import_rules(_read_json(file))
        from_specs(specs)  # compile every condition: an import never writes broken CEL
    except NurtureError as exc:
        fail(str(exc))
    text = yaml.safe_dump(
        {"rules": [s.export() for s in specs]}, sort_keys=False, allow_unicode=True
    )
    if out is None:
        typer.echo(text)
        return
    if out.exists():
        fail(f"{out} exists; choose another --out")
    out.write_text(text, encoding="utf-8")
    console.print(f"wrote {len(specs)} rules to {out}", highlight=False)


@rules_app.command("test")
def test_cmd(
    event_file: Path = typer.Argument(..., help="Event JSON: {type, data, occurred_at?}"),
    contact_file: Path | None = typer.Option(None, "--contact", help="Contact JSON"),
    directory: Path | None = DIR,
) -> None:
    """Dry run: which rules fire for EVENT and why, and what they would do. Changes nothing."""
    automation = _automation(directory)
    c = container()
    now = c.clock.now()
    try:
        event = event_from_json(_read_json(event_file), now)
        contact = contact_from_json(_read_json(contact_file) if contact_file else None)
        result = dry_run_as_run(c.settings, automation, event, contact, now, directory=directory)
    except NurtureError as exc:
        fail(str(exc))
    _print_json(result)


@contacts_app.command("explain")
def explain_cmd(
    email: str = typer.Argument(..., help="The contact's e-mail (or numeric id)"),
) -> None:
    """Print every component of a contact's lead score and the rule deltas behind it."""
    c = container()
    automation = _automation(None)
    with c.db.read() as conn:
        if email.isdigit():
            contact_id: int | None = int(email)
        else:
            normal = normalise_email(email)
            contact_id = contact_store.id_by_email(conn, normal) if normal else None
        result = explain(conn, contact_id, automation, c.clock.now()) if contact_id else None
    c.close()
    if result is None:
        fail(f"no contact {email}")
    comp = result["components"]
    lines = [
        f"{result['email'] or result['contact_id']}: score {result['total']} "
        f"(stored {result['stored']})",
        f"  base                {comp['base']:>5}",
        f"  rfm                 {comp['rfm']:>+5}   rfm score {result['inputs']['rfm_score']}",
        f"  engagement events   {comp['engagement_events']:>+5}   "
        f"{result['inputs']['engagement_events']} events",
        f"  purchases           {comp['purchases']:>+5}   {result['inputs']['purchases']} orders",
        f"  recency penalty     {-comp['recency_penalty']:>+5}   "
        f"{result['inputs']['days_since_purchase']} days since the last purchase",
        f"  rule deltas         {comp['engagement']:>+5}",
        f"  = {comp['raw']} → clamped {comp['total']}",
        "rule deltas:",
    ]
    lines += [
        f"  {r['at']}  {r['delta']:>+5}  {r['rule_id'] or 'earlier rules'}  "
        + (f"event {r['event_id']}  " if r["event_id"] is not None else "")
        + (r["reason"] or "")
        for r in result["rules"]
    ] or ["  (none)"]
    console.print("\n".join(lines), highlight=False)


def register(app: typer.Typer) -> None:
    app.add_typer(rules_app, name="rules")
    app.add_typer(contacts_app, name="contacts")
