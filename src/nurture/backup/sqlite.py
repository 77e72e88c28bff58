"""SQLite: a consistent copy through the online backup API, never a file copy (which would miss
the write-ahead log or tear a page being written)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from nurture.errors import NotFound, StorageUnavailable

MAGIC = b"SQLite format 3\x00"


def _open(path: Path, *, create: bool, timeout: float) -> sqlite3.Connection:
    mode = "rwc" if create else "rw"  # "rw": a mistyped path is an error, not a new empty file
    try:
        return sqlite3.connect(f"file:{path}?mode={mode}", uri=True, timeout=timeout)
    except sqlite3.OperationalError as exc:
        raise StorageUnavailable(f"cannot open the SQLite database {path}: {exc}") from exc


def dump(source: Path, target: Path, *, timeout: float = 30.0) -> None:
    """Copy ``source`` into the new file ``target`` while writers keep committing.

    One backup step for all pages: the copy reads one snapshot, and in WAL mode a reader never
    blocks the writers (they append to the log meanwhile). Copying in several steps would let
    every commit made between two steps restart the copy from the first page, which under a
    steady ingest load may never finish.
    """
    if not source.is_file():
        raise NotFound(f"no SQLite database at {source}")
    src = _open(source, create=False, timeout=timeout)
    dst = _open(target, create=True, timeout=timeout)
    try:
        src.backup(dst)
        # A self-contained file: no -wal beside it; the restore switches WAL back on.
        dst.execute("PRAGMA journal_mode=DELETE")
        problem = dst.execute("PRAGMA quick_check").fetchone()[0]
        if problem != "ok":
            raise StorageUnavailable(f"the copy of {source} failed its check: {problem}")
    except sqlite3.Error as exc:
        raise StorageUnavailable(f"backup of {source} failed: {exc}") from exc
    finally:
        dst.close()
        src.close()


def load(backup: Path, target: Path, *, timeout: float = 30.0) -> None:
    """Replace the contents of ``target`` (created if missing) with the backup, page by page
    through the same API, so a WAL-mode target ends up consistent with its log."""
    src = _open(backup, create=False, timeout=timeout)
    dst = _open(target, create=True, timeout=timeout)
    try:
        src.backup(dst)
        dst.execute("PRAGMA journal_mode=WAL")
    except sqlite3.Error as exc:
        raise StorageUnavailable(f"restore into {target} failed: {exc}") from exc
    finally:
        dst.close()
        src.close()
