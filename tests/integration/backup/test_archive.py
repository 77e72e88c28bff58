"""Backup and restore on both databases, and everything they refuse."""

from __future__ import annotations

import os
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import text

from nurture import backup as archive
from nurture.clock import VirtualClock
from nurture.database import migrate
from nurture.database.engine import Database
from nurture.errors import ConfigError, Conflict, MalformedPayload, NotFound, StorageUnavailable
from nurture.storage import contacts as contact_store
from tests.helpers import new_contact


def emails(db: Database) -> list[str | None]:
    with db.read() as conn:
        return sorted(c["email"] for c in contact_store.search(conn, None, limit=100))


def test_backup_restores_into_a_fresh_database(
    db: Database, clock: VirtualClock, scratch_url: Callable[[], str], tmp_path: Path
) -> None:
    new_contact(db, clock, "ann@example.com")
    new_contact(db, clock, "bob@example.com")
    result = archive.backup(db, tmp_path / "copy", clock.now())
    assert result.path == tmp_path / "copy" and result.size > 0
    assert result.revision == migrate.head_revision(db)
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no partial

    fresh = Database(scratch_url())
    try:
        restored = archive.restore(fresh, result.path)
        assert not restored.needs_migrate
        assert emails(fresh) == ["ann@example.com", "bob@example.com"]
        assert migrate.is_current(fresh)
        # The restored database is fully usable: it takes writes (and ids continue).
        new_contact(fresh, clock, "carol@example.com")
        assert len(emails(fresh)) == 3
    finally:
        fresh.dispose()


def test_restore_refuses_a_database_with_data_unless_forced(
    db: Database, clock: VirtualClock, scratch_url: Callable[[], str], tmp_path: Path
) -> None:
    new_contact(db, clock, "ann@example.com")
    copy = archive.backup(db, tmp_path / "copy", clock.now()).path
    other = Database(scratch_url())
    try:
        migrate.upgrade(other)
        new_contact(other, clock, "zed@example.com")
        with pytest.raises(Conflict, match=r"not empty.*--force"):
            archive.restore(other, copy)
        assert emails(other) == ["zed@example.com"]  # untouched
        archive.restore(other, copy, force=True)
        assert emails(other) == ["ann@example.com"]
    finally:
        other.dispose()


def test_restore_refuses_a_backup_newer_than_the_code(
    db: Database, clock: VirtualClock, scratch_url: Callable[[], str], tmp_path: Path
) -> None:
    head = migrate.head_revision(db)
    with db.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '9999'"))
    try:
        copy = archive.backup(db, tmp_path / "future", clock.now())
    finally:  # the PostgreSQL test database outlives this test (tables are truncated, not it)
        with db.begin() as conn:
            conn.execute(text("UPDATE alembic_version SET version_num = :v"), {"v": head})
    assert copy.revision == "9999"
    fresh = Database(scratch_url())
    try:
        with pytest.raises(Conflict, match="schema revision 9999, newer than this version"):
            archive.restore(fresh, copy.path)
        assert not migrate.holds_data(fresh)
    finally:
        fresh.dispose()


def test_bad_input_is_named_and_changes_nothing(
    db: Database, clock: VirtualClock, tmp_path: Path
) -> None:
    new_contact(db, clock, "ann@example.com")
    with pytest.raises(NotFound, match="no backup file at"):
        archive.restore(db, tmp_path / "missing")
    junk = tmp_path / "junk"
    junk.write_bytes(b"hello, not a backup")
    with pytest.raises(MalformedPayload, match="not a nurture backup"):
        archive.restore(db, junk, force=True)
    with pytest.raises(NotFound, match="does not exist"):
        archive.backup(db, tmp_path / "no" / "such" / "dir" / "x", clock.now())
    with pytest.raises(NotFound, match="backup directory"):
        archive.backup(db, tmp_path / "nodir", clock.now(), keep=3)
    existing = tmp_path / "taken"
    existing.write_text("keep me")
    with pytest.raises(Conflict, match="exists already"):
        archive.backup(db, existing, clock.now())
    assert existing.read_text() == "keep me"
    assert emails(db) == ["ann@example.com"]


def test_a_backup_of_the_other_kind_is_refused(
    db: Database, clock: VirtualClock, sqlite_url: str, tmp_path: Path
) -> None:
    if db.is_sqlite:
        pytest.skip("needs a PostgreSQL target; the PostgreSQL variant covers it")
    lite = Database(sqlite_url)
    try:
        copy = archive.backup(lite, tmp_path / "lite", clock.now()).path
    finally:
        lite.dispose()
    with pytest.raises(Conflict, match="is a sqlite backup but the database is postgresql"):
        archive.restore(db, copy, force=True)


def test_unreachable_database_is_named(clock: VirtualClock, tmp_path: Path) -> None:
    missing = Database(f"sqlite:///{tmp_path / 'absent.db'}")
    with pytest.raises(NotFound, match="no SQLite database at"):
        archive.backup(missing, tmp_path / "copy", clock.now())
    assert not (tmp_path / "absent.db").exists()  # not created by looking
    nowhere = Database("postgresql+psycopg://nobody@127.0.0.1:1/none?connect_timeout=2")
    with pytest.raises(StorageUnavailable, match="database unavailable"):
        archive.backup(nowhere, tmp_path / "copy", clock.now())
    assert list(tmp_path.iterdir()) == []


def test_pg_dump_missing_is_named(
    db: Database, clock: VirtualClock, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if db.is_sqlite:
        pytest.skip("SQLite needs no external tool")
    monkeypatch.setenv("PATH", str(tmp_path / "empty-path"))
    with pytest.raises(ConfigError, match="pg_dump is not installed"):
        archive.backup(db, tmp_path / "copy", clock.now())
    assert [p.name for p in tmp_path.iterdir()] == []


def test_directory_mode_names_by_time_and_keeps_the_newest(
    db: Database, clock: VirtualClock, tmp_path: Path
) -> None:
    shelf = tmp_path / "backups"
    shelf.mkdir()
    other = shelf / "notes.txt"
    other.write_text("not a backup")
    made = []
    for hour in range(4):
        at = clock.now() + timedelta(hours=hour)
        made.append(archive.backup(db, shelf, at, keep=2))
    suffix = "sqlite3" if db.is_sqlite else "pgdump"
    assert made[0].path.name == f"nurture-20261123T090000Z.{suffix}"
    assert [r.removed for r in made[:2]] == [[], []]
    assert [p.name for p in made[2].removed] == [made[0].path.name]
    assert [p.name for p in made[3].removed] == [made[1].path.name]
    assert sorted(p.name for p in shelf.iterdir()) == sorted(
        [made[2].path.name, made[3].path.name, "notes.txt"]
    )
    assert os.path.getsize(made[3].path) > 0
