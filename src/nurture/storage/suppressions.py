"""Suppressions: who must not get marketing mail (or any mail, after a hard bounce)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, delete, insert, or_, select

from nurture.schema.tables import suppressions
from nurture.storage.dialect import insert_ignore


def add(
    conn: Connection,
    contact_id: int | None,
    email_hash: str | None,
    reason: str,
    now: datetime,
    event_id: int | None = None,
) -> bool:
    """Insert once per (address, reason); contacts without an address once per (id, reason)."""
    row = {
        "contact_id": contact_id,
        "email_hash": email_hash,
        "reason": reason,
        "created_at": now,
        "event_id": event_id,
    }
    if email_hash is not None:
        stmt = insert_ignore(conn, suppressions).values(**row).returning(suppressions.c.id)
        return conn.execute(stmt).scalar_one_or_none() is not None
    exists = conn.execute(
        select(suppressions.c.id).where(
            suppressions.c.contact_id == contact_id, suppressions.c.reason == reason
        )
    ).first()
    if exists:
        return False
    conn.execute(insert(suppressions).values(**row))
    return True


def reasons(conn: Connection, contact_id: int | None, email_hash: str | None) -> set[str]:
    conds = []
    if contact_id is not None:
        conds.append(suppressions.c.contact_id == contact_id)
    if email_hash is not None:
        conds.append(suppressions.c.email_hash == email_hash)
    if not conds:
        return set()
    rows = conn.execute(select(suppressions.c.reason).where(or_(*conds)))
    return {r.reason for r in rows}


def reasons_by_hash(conn: Connection, email_hashes: Sequence[str]) -> dict[str, set[str]]:
    """The suppression reasons of each of these address hashes that has any."""
    out: dict[str, set[str]] = {}
    for start in range(0, len(email_hashes), 500):
        chunk = list(email_hashes[start : start + 500])
        rows = conn.execute(
            select(suppressions.c.email_hash, suppressions.c.reason).where(
                suppressions.c.email_hash.in_(chunk)
            )
        )
        for r in rows:
            out.setdefault(r.email_hash, set()).add(r.reason)
    return out


def remove(
    conn: Connection, contact_id: int | None, email_hash: str | None, reason: str | None = None
) -> int:
    conds = []
    if contact_id is not None:
        conds.append(suppressions.c.contact_id == contact_id)
    if email_hash is not None:
        conds.append(suppressions.c.email_hash == email_hash)
    if not conds:
        return 0
    stmt = delete(suppressions).where(or_(*conds))
    if reason is not None:
        stmt = stmt.where(suppressions.c.reason == reason)
    return conn.execute(stmt).rowcount


def list_all(
    conn: Connection,
    *,
    contact_id: int | None = None,
    reason: str | None = None,
    after_id: int | None = None,
    limit: int = 100,
) -> list[dict[str, Any]]:
    stmt = select(suppressions).order_by(suppressions.c.id).limit(limit)
    if contact_id is not None:
        stmt = stmt.where(suppressions.c.contact_id == contact_id)
    if reason:
        stmt = stmt.where(suppressions.c.reason == reason)
    if after_id is not None:
        stmt = stmt.where(suppressions.c.id > after_id)
    return [dict(r) for r in conn.execute(stmt).mappings()]
