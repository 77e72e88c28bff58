"""The webhook inbox (``inbox_deliveries``): the last few thousand requests, newest first."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection, delete, func, insert, select

from nurture.schema.tables import inbox_deliveries


def add(conn: Connection, rows: Sequence[dict[str, Any]], keep: int) -> None:
    """Append ``rows`` and drop what falls beyond the newest ``keep``."""
    if not rows:
        return
    conn.execute(insert(inbox_deliveries), list(rows))
    newest = conn.execute(select(func.max(inbox_deliveries.c.id))).scalar_one()
    if newest is not None and newest > keep:
        conn.execute(delete(inbox_deliveries).where(inbox_deliveries.c.id <= newest - keep))


def recent(
    conn: Connection,
    *,
    source: str | None = None,
    outcome: str | None = None,
    before_id: int | None = None,
    limit: int = 50,
) -> list[dict[str, Any]]:
    query = select(inbox_deliveries).order_by(inbox_deliveries.c.id.desc()).limit(limit)
    if source is not None:
        query = query.where(inbox_deliveries.c.source == source)
    if outcome is not None:
        query = query.where(inbox_deliveries.c.outcome == outcome)
    if before_id is not None:
        query = query.where(inbox_deliveries.c.id < before_id)
    return [dict(r) for r in conn.execute(query).mappings()]


def get(conn: Connection, delivery_id: int) -> dict[str, Any] | None:
    row = (
        conn.execute(select(inbox_deliveries).where(inbox_deliveries.c.id == delivery_id))
        .mappings()
        .first()
    )
    return dict(row) if row else None


def sources(conn: Connection) -> list[str]:
    query = select(inbox_deliveries.c.source).distinct().order_by(inbox_deliveries.c.source)
    return [r[0] for r in conn.execute(query)]
