"""``nurture prune [--dry-run] [--vacuum]``: the retention pass now, with a table of what went."""

from __future__ import annotations

import getpass
from datetime import datetime
from pathlib import Path

import typer
from rich.table import Table

from nurture.cli.common import console, container, fail
from nurture.database import migrate
from nurture.database.engine import Database, translate_errors
from nurture.errors import NurtureError
from nurture.retention import Policy, Pruner, PruneReport
from nurture.storage import audit
from nurture.storage import retention as store


def _mb(n: int) -> str:
    return f"{n / 1_048_576:,.1f} MB"


def _sqlite_path(url: str) -> Path | None:
    if not url.startswith("sqlite:///") or url.endswith(":memory:"):
        return None
    return Path(url.removeprefix("sqlite:///").split("?", 1)[0])


def _table(report: PruneReport) -> Table:
    verb = "would change" if report.dry_run else "rows"
    table = Table(title="dry run: nothing changed" if report.dry_run else "pruned")
    for name, justify in (("table", "left"), ("action", "left"), ("older than", "right")):
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    table.add_column(verb, justify="right")
    for item in report.items:
        window = f"{item.days} days" if item.days else "kept forever"
        table.add_row(item.table, item.action, window, f"{item.rows:,}" if item.days else "-")
    return table


def prune(
    dry_run: bool = typer.Option(
        False, "--dry-run", help="Count what would be removed; change nothing."
    ),
    vacuum: bool = typer.Option(
        False,
        "--vacuum",
        help="Then rewrite the database (SQLite VACUUM: compacts the file and turns on "
        "incremental space reclaim for a file created before it; PostgreSQL VACUUM ANALYZE).",
    ),
) -> None:
    """Apply the retention windows now (NURTURE_RETENTION_*_DAYS; a worker also runs this
    every NURTURE_RETENTION_INTERVAL_MINUTES) and report the rows and space freed."""
    if dry_run and vacuum:
        fail("--vacuum rewrites the database; it cannot be combined with --dry-run", code=2)
    c = container()
    path = _sqlite_path(c.settings.database_url)
    if path is not None and not path.is_file():
        fail(f"no SQLite database at {path}: nothing to prune")
    try:
        with translate_errors():  # unreachable or locked: a clear message, not a traceback
            _run(c.db, Policy.from_settings(c.settings), c.clock.now(), dry_run, vacuum)
    except NurtureError as exc:
        fail(str(exc))
    finally:
        c.close()


def _run(db: Database, policy: Policy, now: datetime, dry_run: bool, vacuum: bool) -> None:
    if not migrate.is_current(db):
        fail(
            f"the database is at revision {migrate.current_revision(db)}, "
            f"not {migrate.head_revision(db)}: run `nurture migrate` first"
        )
    report = Pruner(db, policy).run(now, dry_run=dry_run)
    if not dry_run:
        with db.begin() as conn:
            audit.record(
                conn,
                at=now,
                actor=f"cli:{getpass.getuser()}",
                action="retention.prune",
                detail={**report.counts(), "freed_bytes": report.freed_bytes},
            )
    console.print(_table(report))
    if not policy.enabled:
        console.print("retention is off: every NURTURE_RETENTION_*_DAYS is 0", highlight=False)
    _space(report)
    if vacuum:
        _vacuum(db)


def _space(report: PruneReport) -> None:
    before, after = report.before, report.after
    if report.dry_run:
        console.print(f"database: {_mb(before.bytes)}", highlight=False)
    else:
        console.print(
            f"database: {_mb(before.bytes)} -> {_mb(after.bytes)} "
            f"(freed {_mb(max(report.freed_bytes, 0))}; {report.writes} transactions, "
            f"longest {report.longest_write_seconds * 1000:.0f} ms)",
            highlight=False,
        )
    if not after.incremental:
        console.print(
            "this SQLite file was created without incremental vacuum: freed pages are reused "
            "but the file does not shrink; run `nurture prune --vacuum` once (it rewrites the "
            "whole file and blocks writers meanwhile) to turn it on",
            highlight=False,
        )


def _vacuum(db: Database) -> None:
    with db.read() as conn:
        before = store.space(conn)
    if db.is_sqlite:
        console.print("VACUUM: rewriting the file; writers wait until it ends...", highlight=False)
    else:
        console.print("VACUUM (ANALYZE) of events, timeline, jobs, deliveries...", highlight=False)
    store.vacuum(db)
    with db.read() as conn:
        after = store.space(conn)
    console.print(
        f"vacuumed: {_mb(before.bytes)} -> {_mb(after.bytes)}"
        + ("; incremental reclaim is on" if db.is_sqlite and after.incremental else ""),
        highlight=False,
    )


def register(app: typer.Typer) -> None:
    app.command("prune")(prune)
