"""``nurture backup`` and ``nurture restore`` as an operator runs them: what they print, and
that every refusal names the problem, exits non-zero and changes nothing."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import text
from typer.testing import CliRunner

from nurture.cli.main import app
from nurture.clock import VirtualClock
from nurture.database import migrate
from nurture.database.engine import Database
from nurture.storage import contacts as contact_store
from tests.helpers import new_contact

runner = CliRunner()


def run(args: list[str], database_url: str) -> tuple[int, str]:
    result = runner.invoke(app, args, env={"NURTURE_DATABASE_URL": database_url})
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, " ".join(result.output.split())


def emails(db: Database) -> list[str | None]:
    with db.read() as conn:
        return [c["email"] for c in contact_store.search(conn, None)]


def test_backup_then_restore_with_force(
    db: Database, clock: VirtualClock, database_url: str, tmp_path: Path
) -> None:
    new_contact(db, clock, "ann@example.com")
    copy = tmp_path / "copy.backup"
    code, out = run(["backup", str(copy)], database_url)
    assert code == 0 and f"backup written to {copy}" in out
    new_contact(db, clock, "later@example.com")

    code, out = run(["restore", str(copy)], database_url)
    assert code == 1 and "the database is not empty" in out and "--force" in out
    assert emails(db) == ["ann@example.com", "later@example.com"]

    db.dispose()
    code, out = run(["restore", str(copy), "--force"], database_url)
    assert code == 0 and f"restored {copy}" in out and "migrate" not in out
    assert emails(db) == ["ann@example.com"]


def test_every_refusal_names_the_problem_and_changes_nothing(
    db: Database, clock: VirtualClock, database_url: str, tmp_path: Path
) -> None:
    new_contact(db, clock, "ann@example.com")
    head = migrate.head_revision(db)
    code, out = run(["restore", str(tmp_path / "nope.backup"), "--force"], database_url)
    assert code == 1 and "no backup file at" in out
    junk = tmp_path / "junk.backup"
    junk.write_text("not a backup")
    code, out = run(["restore", str(junk), "--force"], database_url)
    assert code == 1 and "is not a nurture backup" in out

    with db.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '0999'"))
    newer = tmp_path / "newer.backup"
    try:
        assert run(["backup", str(newer)], database_url)[0] == 0
    finally:  # the PostgreSQL test database outlives this test
        with db.begin() as conn:
            conn.execute(text("DELETE FROM contacts"))
            conn.execute(text("UPDATE alembic_version SET version_num = :v"), {"v": head})
    code, out = run(["restore", str(newer), "--force"], database_url)
    assert code == 1 and "schema revision 0999, newer than this version of nurture" in out
    assert emails(db) == []  # what was there stays

    code, out = run(["backup", str(newer)], database_url)
    assert code == 1 and "exists already" in out
    code, out = run(["backup", "--keep", "0", str(tmp_path)], database_url)
    assert code == 2 and "--keep" in out
    code, out = run(["backup", str(tmp_path / "missing-dir" / "x")], database_url)
    assert code == 1 and "does not exist" in out

    current = tmp_path / "current.backup"
    assert run(["backup", str(current)], database_url)[0] == 0
    if db.is_sqlite:
        nowhere = f"sqlite:///{tmp_path}/no/such/dir/nurture.db"
        expected = ("no SQLite database at", "does not exist")
    else:
        nowhere = "postgresql://nobody@127.0.0.1:1/none?connect_timeout=2"
        expected = ("database unavailable", "database unavailable")
    code, out = run(["backup", str(tmp_path / "u.backup")], nowhere)
    assert code == 1 and expected[0] in out
    code, out = run(["restore", str(current)], nowhere)
    assert code == 1 and expected[1] in out
    assert not (tmp_path / "u.backup").exists()
