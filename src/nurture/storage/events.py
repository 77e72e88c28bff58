"""The inbox: every accepted delivery, raw and canonical, and its processing status."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import orjson
from sqlalchemy import Connection, func, select, update

from nurture.core.events import ContactRef, StoredEvent
from nurture.database import notify
from nurture.database.encode import read_sqlite_time, sqlite_time
from nurture.schema.tables import events

SUMMARY_COLUMNS = (
    events.c.id,
    events.c.source,
    events.c.type,
    events.c.status,
    events.c.attempts,
    events.c.partition,
    events.c.contact_id,
    events.c.received_at,
    events.c.occurred_at,
    events.c.processed_at,
    events.c.error,
    events.c.depth,
    events.c.parent_id,
)


INSERT_COLUMNS = (
    "source",
    "type",
    "dedupe_key",
    "partition",
    "status",
    "available_at",
    "contact_key",
    "contact_id",
    "raw",
    "content_type",
    "canonical",
    "received_at",
    "occurred_at",
    "depth",
    "parent_id",
    "client_addr",
)
_TIMES = frozenset({"available_at", "received_at", "occurred_at"})
# SQLite allows 32,766 bound variables per statement.
_CHUNK = 1000


# Per column: 1 = JSON, 2 = time (encoded here on SQLite), 0 = passed as is.
_KINDS = tuple(
    (col, 1 if col == "canonical" else 2 if col in _TIMES else 0) for col in INSERT_COLUMNS
)


@functools.lru_cache(maxsize=64)
def _sqlite_insert(count: int, returning: bool) -> str:
    one = "(" + ", ".join("?" for _ in INSERT_COLUMNS) + ")"
    return (
        f"INSERT INTO events ({', '.join(INSERT_COLUMNS)}) VALUES "
        + ", ".join([one] * count)
        + " ON CONFLICT (dedupe_key) DO NOTHING"
        + (" RETURNING id, dedupe_key" if returning else "")
    )


# SQLite: the rows this transaction inserted after ``max(id)`` was read, as one JSON value. It holds
# the write lock, so rows above that id are its own. The sqlite3 module releases and retakes the GIL
# for every row it steps through; RETURNING one row per event made the writer thread queue for the
# GIL behind the event loop once per event (a context switch each, ~1.2 per request measured),
# where this costs three statements per commit whatever the number of rows.
_SQLITE_LAST_ID = "SELECT max(id) FROM events"
_SQLITE_INSERTED = "SELECT json_group_array(json_array(id, dedupe_key)) FROM events WHERE id > ?"


# PostgreSQL: one array parameter per column, sent in binary (%b), whatever the number of rows.
# A VALUES list with a placeholder per value made psycopg rewrite a query of several kilobytes on
# every commit and escape every value as text: about 2.5x the CPU per row. ORDER BY keeps the ids
# in the rows' order (a batch's events keep their arrival order).
_PG_ARRAY_TYPES = {
    "partition": "int4",
    "depth": "int4",
    "contact_id": "int8",
    "parent_id": "int8",
    "raw": "bytea",
    "available_at": "timestamptz",
    "received_at": "timestamptz",
    "occurred_at": "timestamptz",
}
_PG_UNNEST_FROM = 4  # below this many rows, a VALUES list costs less than the 15 arrays
_PG_ONE = "(" + ", ".join("%s::jsonb" if c == "canonical" else "%s" for c in INSERT_COLUMNS) + ")"


# Both wake the event processors (in every process) at commit, in the insert's own round trip.
@functools.lru_cache(maxsize=8)
def _pg_values_insert(count: int) -> str:
    return notify.with_wake(
        f"INSERT INTO events ({', '.join(INSERT_COLUMNS)}) VALUES "
        + ", ".join([_PG_ONE] * count)
        + " ON CONFLICT (dedupe_key) DO NOTHING RETURNING id, dedupe_key",
        "id, dedupe_key",
        notify.EVENTS,
    )


_PG_INSERT = notify.with_wake(
    f"INSERT INTO events ({', '.join(INSERT_COLUMNS)}) "
    f"SELECT {', '.join(c + '::jsonb' if c == 'canonical' else c for c in INSERT_COLUMNS)} "
    "FROM unnest("
    + ", ".join(f"%b::{_PG_ARRAY_TYPES.get(c, 'text')}[]" for c in INSERT_COLUMNS)
    + f") WITH ORDINALITY AS given ({', '.join(INSERT_COLUMNS)}, n) ORDER BY n "
    "ON CONFLICT (dedupe_key) DO NOTHING RETURNING id, dedupe_key",
    "id, dedupe_key",
    notify.EVENTS,
)


def insert_new(conn: Connection, rows: Sequence[dict[str, Any]]) -> dict[str, int]:
    """Insert rows whose dedupe key is new; return ``{dedupe_key: id}`` for the inserted ones.

    Duplicates (already stored, or racing in another transaction) are skipped by the UNIQUE
    constraint, so concurrent deliveries of one event store exactly one row.

    This is the intake hot path, so it is one multi-row ``INSERT ... ON CONFLICT DO NOTHING`` at
    the driver level with values encoded here (orjson, fixed-width UTC text on SQLite): the
    generic Core path cost several times more per row. On PostgreSQL it is one statement
    whatever the number of rows, which also wakes the event processors: the ingest writer runs
    it alone, in autocommit (``Database.autocommit``).
    """
    if not rows:
        return {}
    out: dict[str, int] = {}
    if conn.dialect.name != "sqlite":
        columns: list[list[Any]] = [[] for _ in INSERT_COLUMNS]
        for row in rows:
            get = row.get
            for values, (col, kind) in zip(columns, _KINDS, strict=True):
                value = get(col)
                values.append(orjson.dumps(value, default=str).decode() if kind == 1 else value)
        if len(rows) < _PG_UNNEST_FROM:
            sql = _pg_values_insert(len(rows))
            flat = tuple(v for i in range(len(rows)) for v in (c[i] for c in columns))
            result = conn.exec_driver_sql(sql, flat)
        else:
            result = conn.exec_driver_sql(_PG_INSERT, tuple(columns))
        for event_id, key in result.all():
            out[key] = event_id
        return out
    # The rows of one request share their received and available times: encode each time once.
    times: dict[datetime, str | None] = {}
    for start in range(0, len(rows), _CHUNK):
        chunk = rows[start : start + _CHUNK]
        params: list[Any] = []
        append = params.append
        for row in chunk:
            get = row.get
            for col, kind in _KINDS:
                value = get(col)
                if kind == 1:
                    value = orjson.dumps(value, default=str).decode()
                elif kind == 2 and value is not None:
                    text_ = times.get(value)
                    if text_ is None:
                        text_ = times[value] = sqlite_time(value)
                    value = text_
                append(value)
        if len(chunk) < 3:
            sql = _sqlite_insert(len(chunk), True)
            for event_id, key in conn.exec_driver_sql(sql, tuple(params)):
                out[key] = event_id
            continue
        before = conn.exec_driver_sql(_SQLITE_LAST_ID).scalar() or 0
        conn.exec_driver_sql(_sqlite_insert(len(chunk), False), tuple(params))
        inserted = conn.exec_driver_sql(_SQLITE_INSERTED, (before,)).scalar_one()
        for event_id, key in orjson.loads(inserted):
            out[key] = event_id
    if out:  # wake the event processors of this process at commit
        notify.note(conn, notify.EVENTS)
    return out


def ids_for_keys(conn: Connection, keys: Sequence[str]) -> dict[str, int]:
    if not keys:
        return {}
    rows = conn.execute(
        select(events.c.dedupe_key, events.c.id).where(events.c.dedupe_key.in_(list(keys)))
    )
    return {r.dedupe_key: r.id for r in rows}


def lock_pending_partitions(conn: Connection, now: datetime, limit: int) -> list[int]:
    """PostgreSQL: up to ``limit`` partitions with due pending events that this transaction got
    an advisory lock on. Transaction-level locks, released at commit or when a worker dies; one
    statement for finding and locking them all (a round trip per partition was a tenth of a
    batch's time, and a separate look for candidates another round trip). The candidates may
    be a moment stale; the events themselves are read by the next statement, after the locks.
    Try-locks never wait, so two workers cannot deadlock on them."""
    rows = conn.exec_driver_sql(_LOCK_PENDING, (now, limit))
    return [int(r[0]) for r in rows]


# The lock is taken above the LIMIT (a qualifier is never pushed below one): only for the
# candidates.
_LOCK_PENDING = (
    "SELECT p FROM (SELECT partition AS p FROM events WHERE status = 'pending' "
    "AND available_at <= %s GROUP BY partition LIMIT %s) AS due "
    "WHERE pg_try_advisory_xact_lock(7301, p)"
)


def claim_pending(
    conn: Connection, now: datetime, limit: int, partitions: Sequence[int] | None = None
) -> list[StoredEvent]:
    """Pending events that are due, oldest first (per partition: arrival order).

    Driver level: every event is read once by the processor, and per row the Core result's
    type processing (two times, one JSON value) cost more than SQLite's read of it.
    """
    sqlite = conn.dialect.name == "sqlite"
    mark = "?" if sqlite else "%s"
    where = f"status = 'pending' AND available_at <= {mark}"
    params: list[Any] = [sqlite_time(now) if sqlite else now]
    if partitions is not None:
        if not partitions:
            return []
        if sqlite:
            where += f" AND partition IN ({', '.join('?' * len(partitions))})"
            params.extend(partitions)
        else:
            where += " AND partition = ANY(%s)"
            params.append(list(partitions))
    params.append(limit)
    canonical = "canonical" if sqlite else "canonical::text"
    sql = (
        f"SELECT id, source, type, partition, {canonical}, occurred_at, received_at, attempts, "
        f"depth, parent_id FROM events WHERE {where} ORDER BY id LIMIT {mark}"
    )
    read_time = read_sqlite_time if sqlite else _read_pg_time
    out = []
    # ``all()``: one fetch for the batch, not a call into the driver per row.
    for r in conn.exec_driver_sql(sql, tuple(params)).all():
        body = orjson.loads(r[4])
        out.append(
            StoredEvent(
                id=r[0],
                source=r[1],
                type=r[2],
                partition=r[3],
                contact=ContactRef.from_json(body.get("contact")),
                data=body.get("data") or {},
                occurred_at=read_time(r[5]),
                received_at=read_time(r[6]),
                attempts=r[7],
                depth=r[8],
                parent_id=r[9],
            )
        )
    return out


def _read_pg_time(value: datetime) -> datetime:
    return value.astimezone(UTC)


def mark_processed(conn: Connection, done: Sequence[tuple[int, int | None]], now: datetime) -> None:
    """``done`` is ``[(event_id, contact_id)]``. Driver level: per row, the Core statement's
    parameter processing cost more than SQLite's update."""
    if not done:
        return
    if conn.dialect.name == "sqlite":
        at = sqlite_time(now)
        conn.exec_driver_sql(_MARK_PROCESSED, [(at, cid, eid) for eid, cid in done])
        return
    if now.tzinfo is None:
        raise ValueError(f"naive value for a UTC column: {now!r}")
    # One statement for the batch: an executemany runs (and plans) one UPDATE per event.
    conn.exec_driver_sql(_PG_MARK_PROCESSED, (now, orjson.dumps(done).decode()))


_MARK_PROCESSED = (
    "UPDATE events SET status = 'processed', processed_at = ?, contact_id = ?, error = NULL "
    "WHERE id = ?"
)
_PG_MARK_PROCESSED = (
    "UPDATE events SET status = 'processed', processed_at = %s, contact_id = d.contact_id, "
    "error = NULL FROM (SELECT (e->>0)::bigint AS id, (e->>1)::bigint AS contact_id "
    "FROM json_array_elements(%s::json) AS e) AS d WHERE events.id = d.id"
)


def mark_retry(
    conn: Connection, event_id: int, attempts: int, available_at: datetime, error: str
) -> None:
    conn.execute(
        update(events)
        .where(events.c.id == event_id)
        .values(attempts=attempts, available_at=available_at, error=error)
    )


def mark_failed(conn: Connection, event_id: int, attempts: int, error: str, now: datetime) -> None:
    conn.execute(
        update(events)
        .where(events.c.id == event_id)
        .values(status="failed", attempts=attempts, error=error, processed_at=now)
    )


def requeue(conn: Connection, event_id: int, now: datetime) -> bool:
    """Replay: process the stored event again from its canonical form."""
    result = conn.execute(
        update(events)
        .where(events.c.id == event_id)
        .values(status="pending", attempts=0, available_at=now, error=None, processed_at=None)
    )
    return result.rowcount == 1


def get(conn: Connection, event_id: int) -> dict[str, Any] | None:
    row = conn.execute(select(events).where(events.c.id == event_id)).mappings().first()
    return dict(row) if row else None


def search(
    conn: Connection,
    *,
    status: str | None = None,
    type_: str | None = None,
    contact_id: int | None = None,
    before_id: int | None = None,
    limit: int = 50,
) -> list[dict[str, Any]]:
    stmt = select(*SUMMARY_COLUMNS).order_by(events.c.id.desc()).limit(limit)
    if status:
        stmt = stmt.where(events.c.status == status)
    if type_:
        stmt = stmt.where(events.c.type == type_)
    if contact_id is not None:
        stmt = stmt.where(events.c.contact_id == contact_id)
    if before_id is not None:
        stmt = stmt.where(events.c.id < before_id)
    return [dict(r) for r in conn.execute(stmt).mappings()]


def count_by_status(conn: Connection) -> dict[str, int]:
    rows = conn.execute(select(events.c.status, func.count()).group_by(events.c.status))
    return {r[0]: r[1] for r in rows}


def oldest_available(conn: Connection, now: datetime) -> datetime | None:
    """When the longest-waiting pending event became processable (a retry's ``available_at``
    is its backoff, so a retrying event is not counted as lagging before it is due)."""
    value: datetime | None = conn.execute(
        select(func.min(events.c.available_at)).where(
            events.c.status == "pending", events.c.available_at <= now
        )
    ).scalar_one()
    return value
