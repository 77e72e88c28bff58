"""``nurture prune`` as an operator runs it: the table, the audit record, the unhappy paths."""

from __future__ import annotations

import hashlib
import sqlite3
from pathlib import Path

from sqlalchemy import select, update
from typer.testing import CliRunner

from nurture.cli.main import app
from nurture.clock import VirtualClock
from nurture.core.events import ContactRef, InboundEvent
from nurture.database.engine import Database
from nurture.intake.ingest import Ingestor
from nurture.schema.tables import audit_log, events
from tests.conftest import START

runner = CliRunner()


def run(args: list[str], database_url: str, **env: str) -> tuple[int, str]:
    result = runner.invoke(app, args, env={"NURTURE_DATABASE_URL": database_url, **env})
    return result.exit_code, " ".join(result.output.split())


def old_events(database_url: str, count: int) -> None:
    """Processed events received long ago (the CLI prunes against the real clock)."""
    db = Database(database_url)
    ingestor = Ingestor(db, VirtualClock(START.replace(year=2020)))
    for i in range(count):
        event = InboundEvent("api", "page.viewed", f"k{i}", ContactRef(email="a@example.com"), {})
        ingestor.store([event], b'{"padding": "' + b"x" * 500 + b'"}')
    ingestor.close()
    with db.begin() as conn:
        conn.execute(
            update(events).values(status="processed", processed_at=START.replace(year=2020))
        )
    db.dispose()


def raw_count(database_url: str) -> int:
    db = Database(database_url)
    with db.read() as conn:
        n = len(conn.execute(select(events.c.id).where(events.c.raw.is_not(None))).all())
    db.dispose()
    return n


def test_a_dry_run_reports_and_changes_nothing(database_url: str) -> None:
    old_events(database_url, 5)
    code, out = run(["prune", "--dry-run"], database_url)
    assert code == 0, out
    assert "dry run: nothing changed" in out
    assert "events │ raw payload cleared │ 30 days │ 5" in out
    assert "timeline │ detail trimmed │ 180 days │ 0" in out
    assert raw_count(database_url) == 5


def test_prune_reports_what_went_and_is_audited(database_url: str) -> None:
    old_events(database_url, 5)
    # Events from 2020 are past the history window too: keep them to see their payloads go.
    keep = {"NURTURE_RETENTION_JOB_DAYS": "0", "NURTURE_RETENTION_HISTORY_DAYS": "0"}
    code, out = run(["prune"], database_url, **keep)
    assert code == 0, out
    assert "events │ raw payload cleared │ 30 days │ 5" in out
    assert "jobs │ deleted (done, cancelled) │ kept forever │ -" in out
    assert "database:" in out and "freed" in out and "longest" in out
    assert raw_count(database_url) == 0
    db = Database(database_url)
    with db.read() as conn:
        rows = conn.execute(select(audit_log)).mappings().all()
    db.dispose()
    assert [(r["action"], r["detail"]["events"]) for r in rows] == [("retention.prune", 5)]
    assert rows[0]["actor"].startswith("cli:")


def test_prune_says_when_retention_is_off(database_url: str) -> None:
    off = {
        f"NURTURE_RETENTION_{n}_DAYS": "0"
        for n in ("RAW", "JOB", "DELIVERY", "TIMELINE", "HISTORY")
    }
    code, out = run(["prune"], database_url, **off)
    assert code == 0, out
    assert "retention is off" in out


def test_vacuum_turns_on_incremental_reclaim_for_an_old_sqlite_file(sqlite_url: str) -> None:
    path = sqlite_url.removeprefix("sqlite:///")
    con = sqlite3.connect(path, isolation_level=None)
    con.execute("PRAGMA auto_vacuum=NONE")
    con.execute("VACUUM")
    con.close()
    code, out = run(["prune"], sqlite_url)
    assert code == 0, out
    assert "run `nurture prune --vacuum` once" in out
    code, out = run(["prune", "--vacuum"], sqlite_url)
    assert code == 0, out
    assert "incremental reclaim is on" in out
    con = sqlite3.connect(path)
    assert con.execute("PRAGMA auto_vacuum").fetchone() == (2,)
    con.close()


def test_vacuum_after_pruning(database_url: str) -> None:
    old_events(database_url, 3)
    code, out = run(["prune", "--vacuum"], database_url)
    assert code == 0, out
    # From 2020: past the default history window; the newest stays and only loses its payload.
    assert "events │ deleted (history) │ 365 days │ 2" in out
    assert "events │ raw payload cleared │ 30 days │ 1" in out
    expected = "incremental reclaim is on" if database_url.startswith("sqlite") else "ANALYZE"
    assert expected in out and "vacuumed:" in out


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_bad_options_change_nothing(sqlite_url: str) -> None:
    path = Path(sqlite_url.removeprefix("sqlite:///"))
    before = digest(path)
    code, out = run(["prune", "--days", "3"], sqlite_url)
    assert code == 2 and "No such option" in out
    code, out = run(["prune", "--dry-run", "--vacuum"], sqlite_url)
    assert code == 2 and "cannot be combined with --dry-run" in out
    code, out = run(["prune"], sqlite_url, NURTURE_RETENTION_RAW_DAYS="-3")
    assert code == 1 and "NURTURE_RETENTION_RAW_DAYS" in out
    assert digest(path) == before


def test_an_unreachable_database_is_a_clear_error(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere.db"
    code, out = run(["prune"], f"sqlite:///{missing}")
    assert code == 1 and f"no SQLite database at {missing}" in out
    assert not missing.exists()  # not created as a side effect
    code, out = run(["prune"], "postgresql://nurture@127.0.0.1:1/nurture")
    assert code == 1 and "database unavailable" in out
    assert "Traceback" not in out


def test_an_unmigrated_database_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "empty.db"
    sqlite3.connect(path).close()
    code, out = run(["prune"], f"sqlite:///{path}")
    assert code == 1 and "run `nurture migrate` first" in out
    con = sqlite3.connect(path)
    assert con.execute("SELECT count(*) FROM sqlite_master").fetchone() == (0,)
    con.close()
