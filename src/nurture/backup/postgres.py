"""PostgreSQL: ``pg_dump --format=custom`` (one snapshot, writers never wait) and
``pg_restore --single-transaction`` (all or nothing)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from urllib.parse import unquote, urlsplit, urlunsplit

from nurture.errors import ConfigError, MalformedPayload, StorageUnavailable

MAGIC = b"PGDMP"


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise ConfigError(
            f"{name} is not installed or not on PATH: install the PostgreSQL client tools "
            "(Debian: apt install postgresql-client), at least the server's major version"
        )
    return path


def _libpq(url: str) -> tuple[str, dict[str, str]]:
    """The URL libpq understands, with the password moved to the environment (argv is public
    to every user of the machine)."""
    parts = urlsplit(url.replace("postgresql+psycopg://", "postgresql://", 1))
    env = dict(os.environ)
    netloc = parts.netloc
    if parts.password is not None:
        env["PGPASSWORD"] = unquote(parts.password)
        user, host = netloc.rsplit("@", 1)
        netloc = user.split(":", 1)[0] + "@" + host
    return urlunsplit(parts._replace(netloc=netloc)), env


def _run(args: list[str], env: dict[str, str], what: str) -> str:
    done = subprocess.run(args, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        lines = [line for line in done.stderr.strip().splitlines() if line.strip()]
        raise StorageUnavailable(f"{what} failed: {' '.join(lines[-3:]) or done.returncode}")
    return done.stdout


def dump(url: str, target: Path) -> None:
    dsn, env = _libpq(url)
    _run(
        [_tool("pg_dump"), "--format=custom", "--no-owner", "--no-privileges", "--file",
         str(target), "--dbname", dsn],
        env,
        "pg_dump",
    )  # fmt: skip


def revision(backup: Path) -> str | None:
    """The alembic revision recorded in a dump, read from its data without restoring it."""
    sql = _run(
        [_tool("pg_restore"), "--data-only", "--table=alembic_version", "--file=-", str(backup)],
        dict(os.environ),
        "reading the backup",
    )
    lines = sql.splitlines()
    for i, line in enumerate(lines):
        if line.startswith("COPY ") and "alembic_version" in line:
            value = lines[i + 1].strip() if i + 1 < len(lines) else ""
            return None if value in ("", "\\.") else value
    if "alembic_version" not in sql and not lines:
        raise MalformedPayload(f"{backup} holds no nurture schema")
    return None


def load(url: str, backup: Path) -> None:
    dsn, env = _libpq(url)
    _run(
        [_tool("pg_restore"), "--single-transaction", "--exit-on-error", "--no-owner",
         "--no-privileges", "--dbname", dsn, str(backup)],
        env,
        "pg_restore",
    )  # fmt: skip
