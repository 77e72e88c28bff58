"""What ``nurture backup`` and ``nurture restore`` do, checks first: nothing is written until
the source, the target and the schema revision are known to be right."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from nurture.backup import postgres, sqlite
from nurture.database import migrate
from nurture.database.engine import Database
from nurture.errors import Conflict, MalformedPayload, NotFound

# nurture-20261206T081500Z.sqlite3: sorting the names sorts by time, which rotation relies on.
_NAME = re.compile(r"nurture-\d{8}T\d{6}Z\.(sqlite3|pgdump)")


@dataclass(frozen=True)
class BackupResult:
    path: Path
    size: int
    revision: str | None
    removed: list[Path] = field(default_factory=list)


@dataclass(frozen=True)
class RestoreResult:
    revision: str
    head: str | None

    @property
    def needs_migrate(self) -> bool:
        return self.revision != self.head


def sqlite_path(url: str) -> Path:
    """``sqlite:///./nurture.db`` -> ``./nurture.db``; ``sqlite:////srv/n.db`` -> ``/srv/n.db``."""
    raw = url.split(":///", 1)[1].split("?", 1)[0] if ":///" in url else ""
    if raw in ("", ":memory:"):
        raise Conflict("an in-memory SQLite database cannot be backed up or restored")
    return Path(raw)


def timestamped(directory: Path, now: datetime, dialect: str) -> Path:
    suffix = "sqlite3" if dialect == "sqlite" else "pgdump"
    return directory / f"nurture-{now:%Y%m%dT%H%M%SZ}.{suffix}"


def rotate(directory: Path, keep: int) -> list[Path]:
    """Delete the oldest timestamped backups of ``directory`` beyond the newest ``keep``; other
    files are never touched. The removed paths, oldest first."""
    if keep < 1:
        raise ValueError("keep at least one backup")
    ours = sorted(p for p in directory.iterdir() if _NAME.fullmatch(p.name) and p.is_file())
    old = ours[:-keep]
    for path in old:
        path.unlink()
    return old


def _fsync(path: Path, *, directory: bool = False) -> None:
    fd = os.open(path, os.O_RDONLY | (os.O_DIRECTORY if directory else 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def backup(db: Database, path: Path, now: datetime, *, keep: int | None = None) -> BackupResult:
    """Write a consistent copy of the database to ``path`` (a new file), or into the directory
    ``path`` under a timestamped name, deleting the oldest beyond ``keep``. The copy appears
    under its final name only once complete and on disk."""
    into_directory = keep is not None or path.is_dir()
    if into_directory:
        if not path.is_dir():
            raise NotFound(f"backup directory {path} does not exist")
        target = timestamped(path, now, db.dialect)
    else:
        target = path
        if not target.parent.is_dir():
            raise NotFound(f"directory {target.parent} does not exist")
    if target.exists():
        raise Conflict(f"{target} exists already; name a new file or a directory")
    source = sqlite_path(db.url) if db.is_sqlite else None
    if source is not None and not source.is_file():
        raise NotFound(f"no SQLite database at {source}")
    revision = migrate.current_revision(db)  # and the database answers
    partial = target.with_name(f".{target.name}.partial")
    try:
        if source is not None:
            sqlite.dump(source, partial)
        else:
            postgres.dump(db.url, partial)
        _fsync(partial)
        partial.rename(target)
        _fsync(target.parent, directory=True)
    finally:
        partial.unlink(missing_ok=True)
    removed = rotate(path, keep) if into_directory and keep is not None else []
    return BackupResult(target, target.stat().st_size, revision, removed)


def restore(db: Database, source: Path, *, force: bool = False) -> RestoreResult:
    """Replace the database with a backup. Refuses (changing nothing) a missing or foreign
    file, a backup of the other database kind, a schema newer than this code, and, without
    ``force``, a database that holds data."""
    if not source.is_file():
        raise NotFound(f"no backup file at {source}")
    with source.open("rb") as f:
        magic = f.read(16)
    if magic.startswith(sqlite.MAGIC):
        kind = "sqlite"
    elif magic.startswith(postgres.MAGIC):
        kind = "postgresql"
    else:
        raise MalformedPayload(
            f"{source} is not a nurture backup (neither a SQLite database nor a pg_dump "
            "custom-format archive)"
        )
    if kind != db.dialect:
        raise Conflict(f"{source} is a {kind} backup but the database is {db.dialect}")
    revision = migrate.file_revision(str(source)) if kind == "sqlite" else postgres.revision(source)
    if revision is None:
        raise MalformedPayload(f"{source} holds no nurture schema (no alembic revision)")
    head = migrate.head_revision(db)
    if not migrate.known_revision(revision):
        raise Conflict(
            f"{source} has schema revision {revision}, newer than this version of nurture "
            f"(latest {head}): upgrade nurture before restoring it"
        )
    target = sqlite_path(db.url) if db.is_sqlite else None
    if target is not None and not target.parent.is_dir():
        raise NotFound(f"directory {target.parent} does not exist")
    fresh = target is not None and not target.exists()
    if not fresh and migrate.holds_data(db) and not force:
        raise Conflict(
            "the database is not empty; restoring would replace everything in it: "
            "pass --force (after a backup of it)"
        )
    if target is not None:
        db.dispose()  # no pooled connection of ours sees the file change under it
        sqlite.load(source, target)
    else:
        migrate.drop_everything(db)
        postgres.load(db.url, source)
    return RestoreResult(revision, head)
