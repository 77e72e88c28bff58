"""Messages: one row per e-mail or SMS nurture means to send, keyed by the job that sends it."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, bindparam, delete, func, insert, select, update

from nurture.schema.tables import message_batches, messages
from nurture.schema.types import UtcDateTime
from nurture.storage.dialect import insert_ignore

# Statuses after which the key is settled: a replay or a second worker does nothing.
FINAL = frozenset({"sent", "suppressed", "skipped"})
# Statuses whose last attempt is known not to have reached the provider.
KNOWN_UNSENT = frozenset({"retrying", "failed"})

# Delivery events recorded on the row, first occurrence only.
EVENT_COLUMNS = {
    "delivered": "delivered_at",
    "opened": "opened_at",
    "clicked": "clicked_at",
    "bounced": "bounced_at",
    "complained": "complained_at",
    "unsubscribed": "unsubscribed_at",
}


@dataclass(frozen=True, slots=True)
class Claim:
    """The outcome of claiming a key.

    ``previous`` is the status the row had before this claim (``None`` for a new row);
    ``previous == "sending"`` means an earlier attempt may have reached the provider.
    """

    id: int
    previous: str | None
    attempts: int

    @property
    def uncertain(self) -> bool:
        return self.previous == "sending"


def get_by_key(conn: Connection, key: str) -> dict[str, Any] | None:
    row = conn.execute(select(messages).where(messages.c.key == key)).mappings().first()
    return dict(row) if row else None


def statuses_by_key(conn: Connection, keys: Sequence[str]) -> dict[str, str]:
    """The status of each key that has a row."""
    if not keys:
        return {}
    rows = conn.execute(
        select(messages.c.key, messages.c.status).where(messages.c.key.in_(list(keys)))
    )
    return {r.key: r.status for r in rows}


def get(conn: Connection, message_id: int) -> dict[str, Any] | None:
    row = conn.execute(select(messages).where(messages.c.id == message_id)).mappings().first()
    return dict(row) if row else None


def get_by_provider_id(conn: Connection, provider_message_id: str) -> dict[str, Any] | None:
    row = (
        conn.execute(
            select(messages)
            .where(messages.c.provider_message_id == provider_message_id)
            .order_by(messages.c.id)
        )
        .mappings()
        .first()
    )
    return dict(row) if row else None


def record(conn: Connection, values: dict[str, Any], status: str, now: datetime) -> int | None:
    """Insert a row that is already settled (suppressed, skipped); ``None`` if the key exists."""
    row = {**values, "status": status, "attempts": 0, "created_at": now, "updated_at": now}
    result = conn.execute(insert_ignore(conn, messages).values(**row).returning(messages.c.id))
    return result.scalar_one_or_none()


def claim(conn: Connection, values: dict[str, Any], now: datetime) -> Claim | None:
    """Take the key for one attempt; ``None`` when it is already settled.

    Runs in its own short transaction, committed before the provider is called, so the row
    says ``sending`` for exactly the window in which the outcome can be unknown.
    """
    row = {**values, "status": "sending", "attempts": 1, "created_at": now, "updated_at": now}
    new_id = conn.execute(
        insert_ignore(conn, messages).values(**row).returning(messages.c.id)
    ).scalar_one_or_none()
    if new_id is not None:
        return Claim(new_id, None, 1)
    current = (
        conn.execute(
            select(messages.c.id, messages.c.status, messages.c.attempts)
            .where(messages.c.key == values["key"])
            .with_for_update()
        )
        .mappings()
        .one()
    )
    if current["status"] in FINAL:
        return None
    attempts = current["attempts"] + 1
    conn.execute(
        update(messages)
        .where(messages.c.id == current["id"])
        .values(status="sending", attempts=attempts, updated_at=now)
    )
    return Claim(current["id"], current["status"], attempts)


def claim_many(
    conn: Connection, rows: Sequence[dict[str, Any]], now: datetime
) -> list[Claim | None]:
    """``claim`` for a batch of keys, in order, in a few statements (one transaction).

    New keys are inserted in one multi-row statement; the keys that already existed are then
    locked and taken again unless settled, exactly as ``claim`` does one by one. The keys must
    be distinct.
    """
    if not rows:
        return []
    # executemany with RETURNING: SQLAlchemy batches it into multi-row INSERTs ("insertmanyvalues")
    # from one cached compiled statement; a conflicting key returns no row.
    stmt = insert_ignore(conn, messages).returning(messages.c.id, messages.c.key)
    # In key order: two workers claiming overlapping keys (a job run twice after a lost lease)
    # then wait on each other's unique-index entries in the same order instead of deadlocking.
    params = [
        {**values, "status": "sending", "attempts": 1, "created_at": now, "updated_at": now}
        for values in sorted(rows, key=lambda v: str(v["key"]))
    ]
    new = {r.key: r.id for r in conn.execute(stmt, params)}
    existing_keys = [values["key"] for values in rows if values["key"] not in new]
    existing: dict[str, Any] = {}
    if existing_keys:
        found = conn.execute(
            select(messages.c.id, messages.c.key, messages.c.status, messages.c.attempts)
            .where(messages.c.key.in_(existing_keys))
            .order_by(messages.c.key)
            .with_for_update()
        )
        existing = {r.key: r for r in found}
    claims: list[Claim | None] = []
    retaken: list[dict[str, Any]] = []
    for values in rows:
        key = values["key"]
        if key in new:
            claims.append(Claim(new[key], None, 1))
            continue
        current = existing[key]
        if current.status in FINAL:
            claims.append(None)
            continue
        attempts = current.attempts + 1
        claims.append(Claim(current.id, current.status, attempts))
        retaken.append({"b_id": current.id, "b_attempts": attempts})
    if retaken:
        conn.execute(
            update(messages)
            .where(messages.c.id == bindparam("b_id"))
            .values(status="sending", attempts=bindparam("b_attempts"), updated_at=now),
            retaken,
        )
    return claims


def complete_many(
    conn: Connection, done: Sequence[tuple[int, str | None, str | None]], now: datetime
) -> None:
    """``complete`` for ``(message id, provider message id, settled)`` triples."""
    if not done:
        return
    conn.execute(
        update(messages)
        .where(messages.c.id == bindparam("b_id"))
        .values(
            status="sent",
            provider_message_id=bindparam("b_provider_id"),
            settled=bindparam("b_settled"),
            error=None,
            sent_at=now,
            updated_at=now,
        ),
        [
            {"b_id": mid, "b_provider_id": provider_id, "b_settled": settled}
            for mid, provider_id, settled in sorted(done)
        ],
    )


def fail_many(conn: Connection, failed: Sequence[tuple[int, str, str]], now: datetime) -> None:
    """``fail`` for ``(message id, status, error)`` triples."""
    if not failed:
        return
    conn.execute(
        update(messages)
        .where(messages.c.id == bindparam("b_id"))
        .values(status=bindparam("b_status"), error=bindparam("b_error"), updated_at=now),
        [
            {"b_id": mid, "b_status": status, "b_error": error[:2000]}
            for mid, status, error in sorted(failed)
        ],
    )


def statuses(conn: Connection, message_ids: Sequence[int]) -> dict[int, str]:
    if not message_ids:
        return {}
    rows = conn.execute(
        select(messages.c.id, messages.c.status).where(messages.c.id.in_(list(message_ids)))
    )
    return {r.id: r.status for r in rows}


# -- provider batch requests (the crash window of a batch) ----------------------------------------


def save_batch(
    conn: Connection,
    key: str,
    provider: str,
    message_ids: Sequence[int],
    body: bytes,
    now: datetime,
) -> None:
    conn.execute(
        insert(message_batches).values(
            key=key, provider=provider, message_ids=list(message_ids), body=body, created_at=now
        )
    )


def batches_with(conn: Connection, message_ids: Sequence[int]) -> list[dict[str, Any]]:
    """The stored batch requests holding any of ``message_ids``.

    Rows exist only between a batch's claim and its members' completion, so the table holds a
    handful of rows (batches in flight, or whose answer was lost): reading the member lists of
    all of them is cheaper than a per-member index written for every e-mail.
    """
    wanted = set(message_ids)
    if not wanted:
        return []
    keys = [
        r.key
        for r in conn.execute(select(message_batches.c.key, message_batches.c.message_ids))
        if wanted.intersection(r.message_ids)
    ]
    if not keys:
        return []
    rows = conn.execute(
        select(message_batches)
        .where(message_batches.c.key.in_(keys))
        .order_by(message_batches.c.key)
    ).mappings()
    return [dict(r) for r in rows]


def drop_batches(conn: Connection, keys: Sequence[str]) -> None:
    if keys:
        conn.execute(delete(message_batches).where(message_batches.c.key.in_(list(keys))))


def complete(
    conn: Connection,
    message_id: int,
    provider_message_id: str | None,
    settled: str | None,
    now: datetime,
) -> None:
    conn.execute(
        update(messages)
        .where(messages.c.id == message_id)
        .values(
            status="sent",
            provider_message_id=provider_message_id,
            settled=settled,
            error=None,
            sent_at=now,
            updated_at=now,
        )
    )


def fail(conn: Connection, message_id: int, status: str, error: str, now: datetime) -> None:
    """``retrying``/``failed``: known not sent. ``sending`` keeps the outcome unknown."""
    conn.execute(
        update(messages)
        .where(messages.c.id == message_id)
        .values(status=status, error=error[:2000], updated_at=now)
    )


def mark_event(conn: Connection, message_id: int, kind: str, at: datetime) -> bool:
    """Record a delivery event's first time on the row; ``False`` if unknown or already set."""
    column = EVENT_COLUMNS.get(kind)
    if column is None:
        return False
    col = messages.c[column]
    result = conn.execute(
        update(messages).where(messages.c.id == message_id, col.is_(None)).values({column: at})
    )
    return result.rowcount == 1


def for_contact(conn: Connection, contact_id: int, limit: int = 100) -> list[dict[str, Any]]:
    stmt = (
        select(messages)
        .where(messages.c.contact_id == contact_id)
        .order_by(messages.c.id.desc())
        .limit(limit)
    )
    return [dict(r) for r in conn.execute(stmt).mappings()]


def count_by_status(conn: Connection) -> dict[str, int]:
    rows = conn.execute(select(messages.c.status, func.count()).group_by(messages.c.status))
    return {r[0]: r[1] for r in rows}


def search(
    conn: Connection,
    *,
    contact_id: int | None = None,
    status: str | None = None,
    before_id: int | None = None,
    limit: int = 50,
) -> list[dict[str, Any]]:
    """Newest first; ``before_id`` is the cursor (the last id of the previous page)."""
    stmt = select(messages).order_by(messages.c.id.desc()).limit(limit)
    if contact_id is not None:
        stmt = stmt.where(messages.c.contact_id == contact_id)
    if status:
        stmt = stmt.where(messages.c.status == status)
    if before_id is not None:
        stmt = stmt.where(messages.c.id < before_id)
    return [dict(r) for r in conn.execute(stmt).mappings()]


def count_by_provider_status(conn: Connection) -> dict[tuple[str, str, str], int]:
    """``{(channel, provider, status): count}``, for /metrics (send failures per provider)."""
    rows = conn.execute(
        select(messages.c.channel, messages.c.provider, messages.c.status, func.count()).group_by(
            messages.c.channel, messages.c.provider, messages.c.status
        )
    )
    return {(r[0], r[1], r[2]): r[3] for r in rows}


def sent_per_period(conn: Connection, edges: Sequence[datetime]) -> list[int]:
    """Messages sent in each ``[edges[i], edges[i + 1])``: one range count of
    ``ix_messages_sent_at`` per period, which costs a tenth of grouping the rows by hour."""
    query = select(func.count()).where(
        messages.c.sent_at >= bindparam("low", type_=UtcDateTime()),
        messages.c.sent_at < bindparam("high", type_=UtcDateTime()),
    )
    return [
        int(conn.execute(query, {"low": low, "high": high}).scalar_one())
        for low, high in itertools.pairwise(edges)
    ]
