"""Every event and every change on a contact, with the rule that made it."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection, insert, select

from nurture.storage.schema import timeline


def append(conn: Connection, rows: Sequence[dict[str, Any]]) -> None:
    if rows:
        conn.execute(insert(timeline), list(rows))


def for_contact(
    conn: Connection, contact_id: int, *, before_id: int | None = None, limit: int = 100
) -> list[dict[str, Any]]:
    stmt = (
        select(timeline)
        .where(timeline.c.contact_id == contact_id)
        .order_by(timeline.c.id.desc())
        .limit(limit)
    )
    if before_id is not None:
        stmt = stmt.where(timeline.c.id < before_id)
    return [dict(r) for r in conn.execute(stmt).mappings()]


def for_event(conn: Connection, event_id: int) -> list[dict[str, Any]]:
    stmt = select(timeline).where(timeline.c.event_id == event_id).order_by(timeline.c.id)
    return [dict(r) for r in conn.execute(stmt).mappings()]
