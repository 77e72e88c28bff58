"""Wake-ups when a transaction commits new work: across processes on PostgreSQL (``LISTEN`` /
``NOTIFY``), inside one process on SQLite (a commit hook), so sleeping workers need no polling.

A writer calls ``note(conn, channel)`` in its transaction. PostgreSQL delivers ``NOTIFY`` at
commit and drops it on rollback, to every session that listens (``listen``), in any process.
SQLite has no such thing; ``on_commit`` runs a callback in this process when a transaction that
noted the channel commits (``nurture up`` and tests run the writer and the worker together).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Mapping
from typing import Any

from sqlalchemy import Connection, Engine, event

from nurture.database.engine import Database, dead_client_limits

log = logging.getLogger("nurture.notify")

JOBS = "nurture_jobs"
EVENTS = "nurture_events"
CHANNELS = (JOBS, EVENTS)

_NOTED = "nurture.notify.noted"


def _transaction(conn: Connection) -> Any:
    # The innermost transaction: a NOTIFY sent inside a savepoint that is rolled back is
    # discarded with it, so a later note in the enclosing transaction must send again.
    return conn.get_nested_transaction() or conn.get_transaction()


def send(conn: Connection, channel: str, payload: str = "") -> None:
    """``NOTIFY channel, payload`` on PostgreSQL (delivered at commit); nothing on SQLite."""
    if conn.dialect.name == "postgresql":
        # At the driver level: this rides on hot paths (every ingest commit).
        conn.exec_driver_sql("SELECT pg_notify(%s, %s)", (channel, payload))


def with_wake(statement: str, columns: str, channel: str) -> str:
    """PostgreSQL: ``statement`` (a data-changing one ending in ``RETURNING columns``) that also
    sends ``NOTIFY channel`` when it returns a row, in the same round trip: a separate
    ``SELECT pg_notify`` was a second statement on every ingest commit. Delivered at commit, like
    ``send``; PostgreSQL folds repeats of one channel and payload within a transaction."""
    if channel not in CHANNELS:  # the name goes into SQL text: only known constants
        raise ValueError(f"unknown notification channel {channel!r}")
    out = ", ".join(f"changed.{c.strip()}" for c in columns.split(","))
    return (
        f"WITH changed AS ({statement}) SELECT {out} FROM changed, "
        f"(SELECT pg_notify('{channel}', '') FROM (SELECT FROM changed LIMIT 1) AS one) AS woke"
    )


def note(conn: Connection, channel: str) -> None:
    """Wake ``channel``'s listeners when this transaction commits; once per transaction."""
    noted: dict[str, Any] = conn.info.setdefault(_NOTED, {})
    txn = _transaction(conn)
    if noted.get(channel) is txn:
        return
    noted[channel] = txn
    send(conn, channel)


def on_commit(engine: Engine, channel: str, callback: Callable[[], None]) -> Callable[[], None]:
    """Call ``callback()`` when a transaction on ``engine`` that noted ``channel`` commits.

    For SQLite. SQLAlchemy's ``commit`` event fires just before the commit, while the write lock
    is still held, in the committing thread: the callback must be thread-safe, and the woken
    reader must take the write lock (``BEGIN IMMEDIATE``, as the event processor and the job
    claim do) so it waits for this commit and sees its rows. Returns a function that removes it.
    """

    def _commit(conn: Connection) -> None:
        noted = conn.info.get(_NOTED)
        if noted and noted.pop(channel, None) is not None:
            callback()

    def _rollback(conn: Connection) -> None:
        noted = conn.info.get(_NOTED)
        if noted:
            noted.pop(channel, None)

    event.listen(engine, "commit", _commit)
    event.listen(engine, "rollback", _rollback)

    def remove() -> None:
        event.remove(engine, "commit", _commit)
        event.remove(engine, "rollback", _rollback)

    return remove


async def listen(
    db: Database,
    handlers: Mapping[str, Callable[[str | None], None]],
    stop: asyncio.Event,
) -> None:
    """Deliver ``NOTIFY`` payloads of each channel to its handler until cancelled or ``stop``.

    PostgreSQL only. Each handler is called with ``None`` once ``LISTEN`` is in place, and
    again after every reconnect, so its owner looks at the table again: notifications sent
    while the connection was down are gone.
    """
    import psycopg  # only PostgreSQL installs need the driver

    for channel in handlers:
        if channel not in CHANNELS:  # the names go into SQL text: only known constants
            raise ValueError(f"unknown notification channel {channel!r}")
    dsn = db.engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
    backoff = 0.5
    while not stop.is_set():
        try:
            aconn = await psycopg.AsyncConnection.connect(dsn, autocommit=True)
            async with aconn:
                if db.dead_client_seconds > 0:
                    # Outside the pool, so set here: a vanished host's listener is ended too.
                    await aconn.execute(*dead_client_limits(db.dead_client_seconds))
                for channel in handlers:
                    await aconn.execute(f"LISTEN {channel}")
                backoff = 0.5
                for handler in handlers.values():
                    handler(None)
                async for message in aconn.notifies():
                    on_message = handlers.get(message.channel)
                    if on_message is not None:
                        on_message(message.payload)
        except (psycopg.Error, OSError) as exc:
            log.warning(
                "notifications lost; reconnecting",
                extra={
                    "action": "notify.listen_error",
                    "channels": list(handlers),
                    "error": str(exc),
                },
            )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), backoff)
            backoff = min(backoff * 2, 10.0)
