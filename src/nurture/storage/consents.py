"""Consent records of form signups, and their double opt-in confirmation."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Connection, select, update

from nurture.schema.tables import consents
from nurture.storage.dialect import insert_ignore


def record(conn: Connection, row: dict[str, Any]) -> int:
    """Insert once per submission event; the id (the existing one for a replayed event)."""
    new_id = conn.execute(
        insert_ignore(conn, consents).values(**row).returning(consents.c.id)
    ).scalar_one_or_none()
    if new_id is not None:
        return int(new_id)
    return int(
        conn.execute(
            select(consents.c.id).where(consents.c.event_id == row["event_id"])
        ).scalar_one()
    )


def record_many(conn: Connection, rows: list[dict[str, Any]]) -> None:
    """A processing batch's consent rows in one statement; a replayed event's row is skipped."""
    if rows:
        conn.execute(insert_ignore(conn, consents), rows)


def get(conn: Connection, consent_id: int) -> dict[str, Any] | None:
    row = conn.execute(select(consents).where(consents.c.id == consent_id)).mappings().first()
    return dict(row) if row else None


def confirm(conn: Connection, consent_id: int, now: datetime, client_addr: str | None) -> bool:
    """``pending`` -> ``confirmed``; ``False`` when it was not pending (a second click)."""
    result = conn.execute(
        update(consents)
        .where(consents.c.id == consent_id, consents.c.status == "pending")
        .values(status="confirmed", confirmed_at=now, confirmed_addr=client_addr)
    )
    return result.rowcount == 1
