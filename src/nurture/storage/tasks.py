"""CRM tasks (follow-ups, calls) created by rules."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Connection, select

from nurture.schema.tables import tasks
from nurture.storage.dialect import insert_ignore


def create(conn: Connection, row: dict[str, Any]) -> bool:
    """Insert unless a task with the same key exists; ``True`` when inserted."""
    result = conn.execute(insert_ignore(conn, tasks).returning(tasks.c.id), [row])
    return result.first() is not None


def search(
    conn: Connection,
    *,
    status: str | None = None,
    contact_id: int | None = None,
    due_before: datetime | None = None,
    after_id: int | None = None,
    limit: int = 50,
) -> list[dict[str, Any]]:
    stmt = select(tasks).order_by(tasks.c.id).limit(limit)
    if status:
        stmt = stmt.where(tasks.c.status == status)
    if contact_id is not None:
        stmt = stmt.where(tasks.c.contact_id == contact_id)
    if due_before is not None:
        stmt = stmt.where(tasks.c.due_at <= due_before)
    if after_id is not None:
        stmt = stmt.where(tasks.c.id > after_id)
    return [dict(r) for r in conn.execute(stmt).mappings()]
