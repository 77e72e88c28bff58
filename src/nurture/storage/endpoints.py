"""Outbound endpoints' runtime state (disabled after a 410) and their delivery log."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Connection, insert, select

from nurture.schema.tables import deliveries, endpoints
from nurture.storage.dialect import upsert


def disabled(conn: Connection, name: str) -> dict[str, Any] | None:
    """The disabled state of an endpoint, or ``None`` when it is enabled."""
    row = (
        conn.execute(
            select(endpoints).where(endpoints.c.name == name, endpoints.c.disabled_at.is_not(None))
        )
        .mappings()
        .first()
    )
    return dict(row) if row else None


def set_disabled(conn: Connection, name: str, reason: str | None, now: datetime) -> None:
    """Disable (``reason`` given) or re-enable (``reason=None``) an endpoint."""
    values = {
        "name": name,
        "disabled_at": now if reason is not None else None,
        "disabled_reason": reason,
        "updated_at": now,
    }
    stmt = upsert(conn, endpoints).values(**values)
    stmt = stmt.on_conflict_do_update(
        index_elements=[endpoints.c.name],
        set_={k: stmt.excluded[k] for k in ("disabled_at", "disabled_reason", "updated_at")},
    )
    conn.execute(stmt)


def log_delivery(conn: Connection, row: dict[str, Any]) -> None:
    conn.execute(insert(deliveries).values(**row))


def deliveries_for(conn: Connection, endpoint: str, limit: int = 100) -> list[dict[str, Any]]:
    stmt = (
        select(deliveries)
        .where(deliveries.c.endpoint == endpoint)
        .order_by(deliveries.c.id.desc())
        .limit(limit)
    )
    return [dict(r) for r in conn.execute(stmt).mappings()]
