"""PostgreSQL ends the sessions of a process that stopped talking, so its locks come free.

A host that vanishes (power or network cut) leaves its sessions open on the server, an open
transaction holding event-partition locks and row locks that other workers then skip or wait
on. ``Database(dead_client_seconds=...)`` sets per-session limits so the server gives up on
such a session; ``tests/system/test_scaleout.py`` shows it with a real host cut off the network.
"""

from __future__ import annotations

import time

import pytest
from sqlalchemy import exc, text

from nurture.database.engine import Database

pytestmark = pytest.mark.postgres


def test_limits_are_set_on_every_pooled_connection(pg_url: str) -> None:
    db = Database(pg_url, dead_client_seconds=8)
    try:
        with db.read() as conn:
            shown = {
                name: conn.execute(text(f"SHOW {name}")).scalar_one()
                for name in ("idle_in_transaction_session_timeout", "tcp_user_timeout")
            }
            keepalive = conn.execute(
                text(
                    "SELECT current_setting('tcp_keepalives_idle'), "
                    "current_setting('tcp_keepalives_interval'), "
                    "current_setting('tcp_keepalives_count')"
                )
            ).one()
    finally:
        db.dispose()
    assert shown == {"idle_in_transaction_session_timeout": "8s", "tcp_user_timeout": "8000"}
    # Over a Unix socket the server reports 0 for keepalives; over TCP: idle 4, every 1 s, x4.
    assert tuple(keepalive) in {("4", "1", "4"), ("0", "0", "0")}


def test_zero_leaves_the_server_defaults(pg_url: str) -> None:
    db = Database(pg_url, dead_client_seconds=0)
    try:
        with db.read() as conn:
            value = conn.execute(text("SHOW idle_in_transaction_session_timeout")).scalar_one()
    finally:
        db.dispose()
    assert value == "0"


def test_a_silent_transaction_is_ended_and_its_partition_lock_freed(pg_url: str) -> None:
    silent = Database(pg_url, dead_client_seconds=1)
    other = Database(pg_url, dead_client_seconds=0)
    try:
        gone = silent.engine.connect()
        trans = gone.begin()
        gone.execute(text("SELECT pg_advisory_xact_lock(7301, 5)"))
        # The process stops talking here, mid-transaction, as a host that lost its network.

        def lock_free() -> bool:
            with other.engine.begin() as conn:
                got = conn.execute(text("SELECT pg_try_advisory_xact_lock(7301, 5)"))
                return bool(got.scalar_one())

        assert not lock_free()
        deadline = time.monotonic() + 60  # a failure bound only; the server needs about 1 s
        while not lock_free():
            assert time.monotonic() < deadline, "the silent session kept its lock"
            time.sleep(0.1)
        # The server ended that session: its owner learns it on its next statement.
        with pytest.raises(exc.DBAPIError, match="idle-in-transaction timeout"):
            gone.execute(text("SELECT 1"))
        trans.rollback()
        gone.close()
    finally:
        silent.dispose()
        other.dispose()
