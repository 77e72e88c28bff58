"""The Notion mirror's bookkeeping: which page mirrors which contact, and what was last written."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Connection, select, update

from nurture.schema.tables import notion_pages
from nurture.storage.dialect import insert_ignore

_KEY = (notion_pages.c.endpoint, notion_pages.c.contact_id)


def _where(endpoint: str, contact_id: int) -> Any:
    return (notion_pages.c.endpoint == endpoint) & (notion_pages.c.contact_id == contact_id)


def request_sync(conn: Connection, endpoint: str, contact_id: int, now: datetime) -> int:
    """Note that the contact changed; return the sequence number its next sync job carries.

    The UPDATE takes the row lock, so a sync that starts meanwhile (``start_sync``) waits for
    this transaction and then reads the contact with this change in it.
    """
    conn.execute(
        insert_ignore(conn, notion_pages).values(
            endpoint=endpoint, contact_id=contact_id, seq=0, requested_at=now
        )
    )
    seq: int = conn.execute(
        update(notion_pages)
        .where(_where(endpoint, contact_id))
        .values(requested_at=now)
        .returning(notion_pages.c.seq)
    ).scalar_one()
    return seq


def start_sync(conn: Connection, endpoint: str, contact_id: int) -> dict[str, Any] | None:
    """Claim the pending changes: bump ``seq`` so later changes queue a new job; return the row."""
    row = (
        conn.execute(
            update(notion_pages)
            .where(_where(endpoint, contact_id))
            .values(seq=notion_pages.c.seq + 1)
            .returning(notion_pages)
        )
        .mappings()
        .first()
    )
    return dict(row) if row else None


def set_page(conn: Connection, endpoint: str, contact_id: int, page_id: str | None) -> None:
    conn.execute(
        update(notion_pages)
        .where(_where(endpoint, contact_id))
        .values(
            page_id=page_id, synced_hash=None if page_id is None else notion_pages.c.synced_hash
        )
    )


def mark_synced(
    conn: Connection, endpoint: str, contact_id: int, page_id: str, digest: str, now: datetime
) -> None:
    conn.execute(
        update(notion_pages)
        .where(_where(endpoint, contact_id))
        .values(page_id=page_id, synced_hash=digest, synced_at=now)
    )


def get(conn: Connection, endpoint: str, contact_id: int) -> dict[str, Any] | None:
    row = conn.execute(select(notion_pages).where(_where(endpoint, contact_id))).mappings().first()
    return dict(row) if row else None
