"""Reads behind bringing contacts' segmentations and lead scores up to date after a change made
outside an event (``contacts/refresh.py``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection, func, select

from nurture.schema.tables import contacts, events

# What the refresh always reads besides the columns the segmentations read.
BASE_COLUMNS = ("id", "email", "segments", "score", "engagement", "rfm")


def page(
    conn: Connection, after_id: int, limit: int, columns: Sequence[str]
) -> list[dict[str, Any]]:
    """Contacts with an id above ``after_id``, in id order: ``BASE_COLUMNS`` plus ``columns``."""
    names = list(dict.fromkeys([*BASE_COLUMNS, *columns]))
    stmt = (
        select(*(contacts.c[name] for name in names))
        .where(contacts.c.id > after_id)
        .order_by(contacts.c.id)
        .limit(limit)
    )
    return [dict(r) for r in conn.execute(stmt).mappings()]


def pending_of_type(conn: Connection, type_: str, contact_ids: Sequence[int]) -> set[int]:
    """Those of the contacts that already have a pending event of this type."""
    if not contact_ids:
        return set()
    stmt = select(events.c.contact_id).where(
        events.c.contact_id.in_(list(contact_ids)),
        # ``|| ''`` keeps SQLite off the (status, type) index: after a bulk refresh queued tens
        # of thousands of these, walking them all per page is what would cost.
        events.c.status.concat("") == "pending",
        events.c.type == type_,
    )
    return {r.contact_id for r in conn.execute(stmt)}


def latest_partitions(conn: Connection, contact_ids: Sequence[int]) -> dict[int, int]:
    """The inbox partition of each contact's newest event: an event queued there is processed
    in order with the contact's others, by one worker at a time."""
    if not contact_ids:
        return {}
    newest = (
        select(func.max(events.c.id).label("id"))
        .where(events.c.contact_id.in_(list(contact_ids)))
        .group_by(events.c.contact_id)
        .subquery()
    )
    stmt = select(events.c.contact_id, events.c.partition).join(newest, events.c.id == newest.c.id)
    return {r.contact_id: r.partition for r in conn.execute(stmt)}
