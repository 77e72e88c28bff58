"""Database fixtures for every tier.

SQLite: a migrated template file is copied per test. PostgreSQL: one throw-away database per
test session (so concurrent runs never share tables), migrated once and truncated per test.
Without NURTURE_TEST_DATABASE_URL the PostgreSQL variants skip with the reason; in CI
(NURTURE_REQUIRE_POSTGRES=1) they fail instead of skipping.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, inspect, text

from nurture.clock import VirtualClock
from nurture.config import Settings, normalise_database_url
from nurture.database import migrate
from nurture.database.engine import Database
from nurture.schema.tables import metadata

PG_URL = os.environ.get("NURTURE_TEST_DATABASE_URL", "").strip()
REQUIRE_PG = os.environ.get("NURTURE_REQUIRE_POSTGRES") == "1"
SKIP_PG = (
    "PostgreSQL tests need NURTURE_TEST_DATABASE_URL "
    "(e.g. postgresql://postgres@127.0.0.1:5432/test); .ci/run sets it"
)
START = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)


def pg_available() -> str:
    if not PG_URL:
        if REQUIRE_PG:
            pytest.fail("NURTURE_REQUIRE_POSTGRES=1 but NURTURE_TEST_DATABASE_URL is not set")
        pytest.skip(SKIP_PG)
    return normalise_database_url(PG_URL)


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("template") / "template.db"
    db = Database(f"sqlite:///{path}")
    migrate.upgrade(db)
    db.dispose()
    return path


@pytest.fixture(scope="session")
def pg_session_url() -> Iterator[str]:
    base = pg_available()
    name = f"nurture_t_{uuid.uuid4().hex[:12]}"
    admin = create_engine(base, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    except Exception as exc:
        if REQUIRE_PG:
            raise
        pytest.skip(f"PostgreSQL at NURTURE_TEST_DATABASE_URL is unreachable: {exc}")
    url = base.rsplit("/", 1)[0] + "/" + name
    db = Database(url)
    migrate.upgrade(db)
    db.dispose()
    yield url
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def _truncate(url: str) -> None:
    engine = create_engine(url)
    existing = set(inspect(engine).get_table_names())
    names = ", ".join(f'"{t.name}"' for t in metadata.sorted_tables if t.name in existing)
    with engine.begin() as conn:
        conn.execute(text(f"TRUNCATE {names} RESTART IDENTITY CASCADE"))
    engine.dispose()


def fresh_sqlite_url(template: Path, directory: Path) -> str:
    path = directory / f"nurture-{uuid.uuid4().hex[:8]}.db"
    shutil.copyfile(template, path)
    return f"sqlite:///{path}"


@pytest.fixture
def sqlite_url(sqlite_template: Path, tmp_path: Path) -> str:
    return fresh_sqlite_url(sqlite_template, tmp_path)


@pytest.fixture
def pg_url(request: pytest.FixtureRequest) -> str:
    url: str = request.getfixturevalue("pg_session_url")
    _truncate(url)
    return url


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest) -> str:
    """A clean, migrated database: each test using it runs on SQLite and on PostgreSQL."""
    if request.param == "sqlite":
        return str(request.getfixturevalue("sqlite_url"))
    return str(request.getfixturevalue("pg_url"))


@pytest.fixture
def db(database_url: str) -> Iterator[Database]:
    database = Database(database_url)
    yield database
    database.dispose()


@pytest.fixture
def clock() -> VirtualClock:
    return VirtualClock(START)


@pytest.fixture
def make_settings(database_url: str) -> Callable[..., Settings]:
    def make(**overrides: Any) -> Settings:
        return Settings(database_url=database_url, **overrides)

    return make
