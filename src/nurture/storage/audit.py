"""The audit log: one row per change a person made (page, API or CLI), newest first on read."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Connection, insert, select

from nurture.schema.tables import audit_log


def record(
    conn: Connection,
    *,
    at: datetime,
    actor: str,
    action: str,
    target_kind: str | None = None,
    target_id: str | None = None,
    detail: dict[str, Any] | None = None,
    client_addr: str | None = None,
) -> int:
    """Written in the same transaction as the change, so a change and its record commit together."""
    return int(
        conn.execute(
            insert(audit_log)
            .values(
                at=at,
                actor=actor,
                action=action,
                target_kind=target_kind,
                target_id=target_id,
                detail=detail or {},
                client_addr=client_addr,
            )
            .returning(audit_log.c.id)
        ).scalar_one()
    )


def recent(
    conn: Connection,
    *,
    limit: int = 50,
    before_id: int | None = None,
    target_kind: str | None = None,
    target_id: str | None = None,
) -> list[dict[str, Any]]:
    """Keyset pages by id, newest first; optionally only the entries about one target."""
    query = select(audit_log).order_by(audit_log.c.id.desc()).limit(limit)
    if before_id is not None:
        query = query.where(audit_log.c.id < before_id)
    if target_kind is not None:
        query = query.where(audit_log.c.target_kind == target_kind)
    if target_id is not None:
        query = query.where(audit_log.c.target_id == target_id)
    return [dict(r) for r in conn.execute(query).mappings()]
