"""``nurture import contacts|orders``, ``nurture rfm``, ``nurture campaigns recommend``."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import orjson
import typer
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TransferSpeedColumn,
)
from rich.table import Table

from nurture.bootstrap import Container
from nurture.cli.common import console, container, fail
from nurture.commerce import imports, purchases, recommendations
from nurture.errors import NurtureError
from nurture.pack import load_pack

import_app = typer.Typer(help="Import contacts or order lines from CSV.", no_args_is_help=True)
campaigns_app = typer.Typer(help="One-off campaigns.", no_args_is_help=True)

PRESET = typer.Option(
    "auto",
    "--preset",
    help="Column names: default, crm (the CRM prototype's French export), or auto (detect).",
)
MAP = typer.Option(
    None,
    "--map",
    help="FIELD=COLUMN, repeatable, e.g. --map order_id=numero --map date=date_facture.",
)
DELIMITER = typer.Option(None, "--delimiter", help="Field separator [detected from the header]")
ENCODING = typer.Option("utf-8-sig", "--encoding", help="File encoding (e.g. cp1252).")
REJECTS = typer.Option(
    None, "--rejects", help="Where rejected rows go [FILE.rejects.csv beside the input]"
)


def _config(c: Container) -> purchases.CommerceConfig:
    try:
        return purchases.load_config(load_pack(c.settings.automation_dir))
    except NurtureError as exc:
        fail(str(exc))


def _mapping(pairs: list[str] | None) -> dict[str, str]:
    out = {}
    for pair in pairs or []:
        field, sep, column = pair.partition("=")
        if not sep or not field.strip() or not column.strip():
            fail(f"--map {pair!r}: expected FIELD=COLUMN")
        out[field.strip()] = column.strip()
    return out


def _summary(kind: str, summary: imports.ImportSummary, seconds: float) -> None:
    rate = summary.rows / seconds if seconds > 0 else 0.0
    console.print(
        f"{summary.rows} rows in {seconds:.1f} s ({rate:,.0f} rows/s): "
        f"{summary.accepted} {kind} imported, {summary.unchanged} already present, "
        f"{summary.rejected} rejected; {summary.contacts_created} new contacts"
        + (f", {summary.orders_created} new orders" if kind == "lines" else ""),
        highlight=False,
    )
    if summary.rejected:
        reasons = ", ".join(f"{r} ({n})" for r, n in summary.reasons.most_common())
        console.print(f"rejected: {reasons}; rows in {summary.reject_path}", highlight=False)


def _run_import(
    kind: str, path: Path, rejects: Path | None, **kwargs: Any
) -> tuple[Container, imports.ImportSummary]:
    c = container()
    if not path.is_file():
        fail(f"{path}: no such file")
    reject_path = rejects or path.with_name(path.stem + ".rejects.csv")
    if reject_path.exists():
        reject_path.unlink()  # a stale reject file would describe another run
    fn = imports.import_orders if kind == "orders" else imports.import_contacts
    started = time.perf_counter()
    with (
        path.open("rb") as handle,
        Progress(
            TextColumn(f"importing {path.name}"),
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            TimeElapsedColumn(),
            console=console,
            transient=True,
        ) as bar,
    ):
        task = bar.add_task("import", total=path.stat().st_size)

        def progress() -> None:
            bar.update(task, completed=handle.tell())

        try:
            summary = fn(
                c.db, handle, c.clock.now(), reject_path=reject_path, progress=progress, **kwargs
            )
        except NurtureError as exc:
            fail(str(exc))
    _summary("lines" if kind == "orders" else "contacts", summary, time.perf_counter() - started)
    return c, summary


@import_app.command("orders")
def import_orders(
    path: Path = typer.Argument(..., help="CSV file, one row per order line."),
    preset: str = PRESET,
    map_: list[str] | None = MAP,
    currency: str | None = typer.Option(None, "--currency", help="Currency when the file has none"),
    delimiter: str | None = DELIMITER,
    encoding: str = ENCODING,
    rejects: Path | None = REJECTS,
    rfm: bool = typer.Option(True, "--rfm/--no-rfm", help="Recompute RFM afterwards."),
) -> None:
    """Import order lines (default columns: order_id, email, date, product_key, quantity,
    unit_price, net_amount; optional gross_amount, currency, product_label, client_code, line).
    Re-importing a file changes nothing."""
    c, summary = _run_import(
        "orders",
        path,
        rejects,
        preset=preset,
        mapping=_mapping(map_),
        currency=currency,
        delimiter=delimiter,
        encoding=encoding,
    )
    try:
        if rfm and summary.accepted:
            _rfm(c)
    finally:
        c.close()


@import_app.command("contacts")
def import_contacts(
    path: Path = typer.Argument(..., help="CSV file, one row per contact."),
    preset: str = PRESET,
    map_: list[str] | None = MAP,
    delimiter: str | None = DELIMITER,
    encoding: str = ENCODING,
    rejects: Path | None = REJECTS,
) -> None:
    """Upsert contacts by e-mail (columns: email, first_name, last_name, phone, time_zone,
    client_code, status; any other column becomes an attribute)."""
    c, _ = _run_import(
        "contacts",
        path,
        rejects,
        preset=preset,
        mapping=_mapping(map_),
        delimiter=delimiter,
        encoding=encoding,
    )
    c.close()


def _rfm(c: Container) -> None:
    now = c.clock.now()
    result = purchases.recompute_all(c.db, now, _config(c))
    with c.db.begin() as conn:
        purchases.schedule_nightly(conn, now)
    total = result.read_seconds + result.compute_seconds + result.write_seconds
    console.print(
        f"RFM recomputed for {result.contacts} contacts from {result.orders} orders in "
        f"{total:.2f} s (read {result.read_seconds:.2f}, compute {result.compute_seconds:.2f}, "
        f"write {result.write_seconds:.2f})"
        + (f"; cleared {result.cleared} without orders" if result.cleared else ""),
        highlight=False,
    )


def rfm() -> None:
    """Recompute every contact's RFM figures and scores now (the nightly job does the same)."""
    c = container()
    try:
        _rfm(c)
    finally:
        c.close()


@campaigns_app.command("recommend")
def recommend(
    send: bool = typer.Option(
        False, "--send/--dry-run", help="Queue the e-mails; the default dry run changes nothing."
    ),
    n: int | None = typer.Option(None, "--n", min=1, max=20, help="Items per contact [3]"),
    silence_days: int | None = typer.Option(
        None, "--silence-days", min=0, help="Skip contacts mailed within this many days [135]"
    ),
    limit: int | None = typer.Option(None, "--limit", min=1, help="At most this many contacts"),
    show: int = typer.Option(10, "--show", min=0, help="Print this many planned messages"),
    as_json: bool = typer.Option(False, "--json", help="Print the whole plan as JSON lines"),
) -> None:
    """Product recommendations by value segment (cross-sell, rebuy, win-back) to every
    subscribed buyer outside the silence window."""
    c = container()
    try:
        _recommend(c, send, n, silence_days, limit, show, as_json)
    finally:
        c.close()


def _recommend(
    c: Container,
    send: bool,
    n: int | None,
    silence_days: int | None,
    limit: int | None,
    show: int,
    as_json: bool,
) -> None:
    now = c.clock.now()
    plan = recommendations.plan_campaign(
        c.db, now, _config(c), n=n, silence_days=silence_days, limit=limit
    )
    if as_json:
        for message in plan.messages:
            console.out(orjson.dumps(message).decode(), highlight=False)
    elif show:
        table = Table("contact", "scenario", "recommendations")
        for message in plan.messages[:show]:
            table.add_row(
                message["email"],
                message["scenario"],
                "; ".join(f"{i['name']} ({i['reason']})" for i in message["items"]),
            )
        console.print(table)
    excluded = ", ".join(f"{k}: {v}" for k, v in sorted(plan.excluded.items())) or "none"
    console.print(
        f"{plan.considered} buyers considered, {len(plan.messages)} to mail; excluded: {excluded}",
        highlight=False,
    )
    if not send:
        console.print("dry run: nothing was queued or sent (use --send)", highlight=False)
        return
    try:
        queued = recommendations.send_campaign(c.db, plan, now)
    except NurtureError as exc:
        fail(str(exc))
    console.print(
        f"queued {queued} e-mails (template {recommendations.TEMPLATE!r}); "
        f"{len(plan.messages) - queued} were already queued today",
        highlight=False,
    )


def register(app: typer.Typer) -> None:
    app.add_typer(import_app, name="import")
    app.add_typer(campaigns_app, name="campaigns")
    app.command("rfm")(rfm)
