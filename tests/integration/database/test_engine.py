"""The PostgreSQL connection pool: a dead connection is replaced before use without a ping before
every transaction, and ``autocommit`` commits each statement on its own."""

from __future__ import annotations

import time

import pytest
from sqlalchemy import create_engine, text

from nurture.database.engine import Database


@pytest.fixture
def pg(pg_url: str) -> Database:
    return Database(pg_url)


def backend_pid(db: Database) -> int:
    with db.begin() as conn:
        return int(conn.exec_driver_sql("SELECT pg_backend_pid()").scalar_one())


def test_a_pooled_connection_whose_backend_died_is_replaced_before_use(
    pg: Database, pg_url: str
) -> None:
    first = backend_pid(pg)
    assert backend_pid(pg) == first  # pooled: the same session again
    admin = create_engine(pg_url)
    try:
        with admin.connect() as conn:
            conn.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": first})
            # Until the server has closed it (its socket then holds the error and the EOF).
            for _ in range(200):
                alive = conn.execute(
                    text("SELECT count(*) FROM pg_stat_activity WHERE pid = :pid"), {"pid": first}
                ).scalar_one()
                if not alive:
                    break
                time.sleep(0.05)
    finally:
        admin.dispose()
    # No error for the caller: the dead session is noticed at checkout and replaced.
    assert backend_pid(pg) != first
    pg.dispose()


def test_autocommit_commits_each_statement_before_it_returns(pg: Database) -> None:
    with pg.autocommit() as conn:
        conn.exec_driver_sql("CREATE TABLE IF NOT EXISTS autocommit_probe (n int)")
        conn.exec_driver_sql("INSERT INTO autocommit_probe VALUES (1)")
        # Another session sees the row while this connection is still checked out.
        with pg.read() as other:
            assert other.exec_driver_sql("SELECT count(*) FROM autocommit_probe").scalar() == 1
        conn.exec_driver_sql("DROP TABLE autocommit_probe")
    pg.dispose()
