"""``nurture backup PATH`` and ``nurture restore PATH``."""

from __future__ import annotations

from pathlib import Path

import typer

from nurture import backup as archive
from nurture.cli.common import console, container, fail
from nurture.errors import NurtureError


def backup_cmd(
    path: Path = typer.Argument(
        ..., help="A new file, or a directory for a timestamped nurture-<time>.<kind> file"
    ),
    keep: int | None = typer.Option(
        None,
        "--keep",
        min=1,
        help="PATH is a directory: keep only the newest N timestamped backups in it",
    ),
) -> None:
    """Write a consistent copy of the database while the service runs (SQLite: online backup
    API; PostgreSQL: pg_dump). Restore it with ``nurture restore``."""
    c = container()
    try:
        result = archive.backup(c.db, path, c.clock.now(), keep=keep)
    except NurtureError as exc:
        fail(str(exc))
    finally:
        c.close()
    console.print(
        f"backup written to {result.path} ({result.size:,} bytes, schema {result.revision})",
        highlight=False,
    )
    for old in result.removed:
        console.print(f"removed old backup {old}", highlight=False)


def restore_cmd(
    path: Path = typer.Argument(..., help="A file written by nurture backup"),
    force: bool = typer.Option(False, "--force", help="Replace a database that already holds data"),
) -> None:
    """Replace the database with a backup (stop nurture first). Refuses a non-empty database
    without --force, and a backup whose schema is newer than this version of nurture."""
    c = container()
    try:
        result = archive.restore(c.db, path, force=force)
    except NurtureError as exc:
        fail(str(exc))
    finally:
        c.close()
    console.print(f"restored {path} (schema {result.revision})", highlight=False)
    if result.needs_migrate:
        console.print(
            f"the backup predates this version: run `nurture migrate` (to {result.head}) "
            "before starting nurture",
            highlight=False,
        )


def register(app: typer.Typer) -> None:
    app.command("backup")(backup_cmd)
    app.command("restore")(restore_cmd)
