"""Backups and restores of the whole database while the service runs (``nurture backup``,
``nurture restore``): SQLite through its online backup API, PostgreSQL through ``pg_dump`` and
``pg_restore``; timestamped files with rotation for the systemd timer.

Infrastructure beside ``jobs``: imports ``storage`` (the engine, the schema revision) and the
pure layers; nothing imports it but the edges.
"""

from __future__ import annotations

from nurture.backup.archive import (
    BackupResult,
    RestoreResult,
    backup,
    restore,
    rotate,
    timestamped,
)

__all__ = ["BackupResult", "RestoreResult", "backup", "restore", "rotate", "timestamped"]
