"""The inbox: every accepted delivery, raw and canonical, and its processing status."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import orjson
from sqlalchemy import Connection, and_, bindparam, func, select, text, update

from nurture.core.events import ContactRef, StoredEvent
from nurture.storage.schema import events

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
)
_TIMES = frozenset({"available_at", "received_at", "occurred_at"})
# SQLite allows 32,766 bound variables per statement.
_CHUNK = 1000


def _sqlite_time(value: datetime | None) -> str | None:
    # The exact text SQLAlchemy's SQLite DATETIME writes, so UtcDateTime reads it back.
    return None if value is None else value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")


def insert_new(conn: Connection, rows: Sequence[dict[str, Any]]) -> dict[str, int]:
    """Insert rows whose dedupe key is new; return ``{dedupe_key: id}`` for the inserted ones.

    Duplicates (already stored, or racing in another transaction) are skipped by the UNIQUE
    constraint, so concurrent deliveries of one event store exactly one row.

    This is the intake hot path, so it is one multi-row ``INSERT ... ON CONFLICT DO NOTHING
    RETURNING`` at the driver level with values encoded here (orjson, fixed-width UTC text on
    SQLite): the generic Core path cost several times more per row.
    """
    if not rows:
        return {}
    sqlite = conn.dialect.name == "sqlite"
    mark = "?" if sqlite else "%s"
    marks = [("%s::jsonb" if c == "canonical" and not sqlite else mark) for c in INSERT_COLUMNS]
    one = "(" + ", ".join(marks) + ")"
    out: dict[str, int] = {}
    for start in range(0, len(rows), _CHUNK):
        chunk = rows[start : start + _CHUNK]
        params: list[Any] = []
        for row in chunk:
            for col in INSERT_COLUMNS:
                value = row.get(col)
                if col == "canonical":
                    value = orjson.dumps(value, default=str).decode()
                elif col in _TIMES and sqlite:
                    value = _sqlite_time(value)
                params.append(value)
        sql = (
            f"INSERT INTO events ({', '.join(INSERT_COLUMNS)}) VALUES "
            + ", ".join([one] * len(chunk))
            + " ON CONFLICT (dedupe_key) DO NOTHING RETURNING id, dedupe_key"
        )
        for event_id, key in conn.exec_driver_sql(sql, tuple(params)):
            out[key] = event_id
    return out


def ids_for_keys(conn: Connection, keys: Sequence[str]) -> dict[str, int]:
    if not keys:
        return {}
    rows = conn.execute(
        select(events.c.dedupe_key, events.c.id).where(events.c.dedupe_key.in_(list(keys)))
    )
    return {r.dedupe_key: r.id for r in rows}


def pending_partitions(conn: Connection, now: datetime, limit: int) -> list[int]:
    rows = conn.execute(
        select(events.c.partition)
        .where(events.c.status == "pending", events.c.available_at <= now)
        .group_by(events.c.partition)
        .limit(limit)
    )
    return [r.partition for r in rows]


def try_lock_partition(conn: Connection, partition: int) -> bool:
    """PostgreSQL: a transaction-level advisory lock, released at commit or when a worker dies."""
    return bool(
        conn.execute(
            text("SELECT pg_try_advisory_xact_lock(7301, :p)"), {"p": partition}
        ).scalar_one()
    )


def claim_pending(
    conn: Connection, now: datetime, limit: int, partitions: Sequence[int] | None = None
) -> list[StoredEvent]:
    """Pending events that are due, oldest first (per partition: arrival order)."""
    cond = and_(events.c.status == "pending", events.c.available_at <= now)
    if partitions is not None:
        cond = and_(cond, events.c.partition.in_(list(partitions)))
    rows = conn.execute(
        select(
            events.c.id,
            events.c.source,
            events.c.type,
            events.c.partition,
            events.c.canonical,
            events.c.occurred_at,
            events.c.received_at,
            events.c.attempts,
            events.c.depth,
            events.c.parent_id,
        )
        .where(cond)
        .order_by(events.c.id)
        .limit(limit)
    )
    out = []
    for r in rows:
        canonical = r.canonical
        out.append(
            StoredEvent(
                id=r.id,
                source=r.source,
                type=r.type,
                partition=r.partition,
                contact=ContactRef.from_json(canonical.get("contact")),
                data=canonical.get("data") or {},
                occurred_at=r.occurred_at,
                received_at=r.received_at,
                attempts=r.attempts,
                depth=r.depth,
                parent_id=r.parent_id,
            )
        )
    return out


def mark_processed(conn: Connection, done: Sequence[tuple[int, int | None]], now: datetime) -> None:
    """``done`` is ``[(event_id, contact_id)]``."""
    if not done:
        return
    conn.execute(
        update(events)
        .where(events.c.id == bindparam("eid"))
        .values(status="processed", processed_at=now, contact_id=bindparam("cid"), error=None),
        [{"eid": eid, "cid": cid} for eid, cid in done],
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
