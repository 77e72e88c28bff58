"""Changes a person makes to one contact by hand (the console): add or remove a tag, suppress
(unsubscribe). Each runs in one transaction with its timeline note and its audit entry, and
queues ``contact.changed`` so segmentations that read tags or the status are recomputed by the
rules step (``contacts.refresh``), exactly as after any event.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection

from nurture.contacts import refresh as contact_refresh
from nurture.contacts import suppression
from nurture.core.contacts import ContactState
from nurture.database.engine import Database
from nurture.errors import FieldProblem, InvalidFields, NotFound
from nurture.storage import audit
from nurture.storage import contacts as contact_store
from nurture.storage import timeline as timeline_store

MAX_TAG = 64


@dataclass(frozen=True)
class Who:
    """Who asks, as the audit log spells it (``user:<name>``), from which address."""

    actor: str
    client_addr: str | None = None


def clean_tag(raw: object) -> str:
    """A tag as typed, trimmed; ``InvalidFields`` naming ``tag`` when it cannot be one."""
    tag = raw.strip() if isinstance(raw, str) else ""
    if not tag:
        raise InvalidFields([FieldProblem("tag", "type a tag")])
    if len(tag) > MAX_TAG:
        raise InvalidFields([FieldProblem("tag", f"at most {MAX_TAG} characters")])
    if any(ord(c) < 32 for c in tag):
        raise InvalidFields([FieldProblem("tag", "no control characters")])
    return tag


def _load(conn: Connection, contact_id: int) -> ContactState:
    contact = contact_store.load(conn, contact_id)
    if contact is None:
        raise NotFound(f"no contact {contact_id}")
    return contact


def _record(
    conn: Connection,
    contact: ContactState,
    now: datetime,
    who: Who,
    kind: str,
    detail: dict[str, Any],
) -> None:
    timeline_store.append(
        conn,
        [
            {
                "contact_id": contact.id,
                "event_id": None,
                "at": now,
                "kind": kind,
                "rule_id": None,
                "detail": {**detail, "by": who.actor},
            }
        ],
    )
    audit.record(
        conn,
        at=now,
        actor=who.actor,
        action=kind,
        target_kind="contact",
        target_id=str(contact.id),
        detail=detail,
        client_addr=who.client_addr,
    )
    contact_refresh.queue_changed(conn, [contact.id], now, kind)


def add_tag(db: Database, contact_id: int, raw: object, *, now: datetime, who: Who) -> bool:
    """``False`` (and nothing written) when the contact already has the tag."""
    tag = clean_tag(raw)
    with db.begin() as conn:
        contact = _load(conn, contact_id)
        if not contact.add_tag(tag):
            return False
        contact_store.save(conn, contact, now)
        _record(conn, contact, now, who, "contact.tag_added", {"tag": tag})
    return True


def remove_tag(db: Database, contact_id: int, raw: object, *, now: datetime, who: Who) -> bool:
    tag = raw if isinstance(raw, str) else ""
    with db.begin() as conn:
        contact = _load(conn, contact_id)
        if not contact.remove_tag(tag):
            return False
        contact_store.save(conn, contact, now)
        _record(conn, contact, now, who, "contact.tag_removed", {"tag": tag})
    return True


def unsubscribe(db: Database, contact_id: int, *, now: datetime, who: Who) -> bool:
    """Suppress marketing mail to the contact (as its unsubscribe link would); ``False`` when
    it was already unsubscribed. Only the explicit re-subscribe lifts it."""
    with db.begin() as conn:
        contact = _load(conn, contact_id)
        added = suppression.suppress(conn, contact, "unsubscribed", now)
        changed = contact.degrade_status("unsubscribed")
        if not (added or changed):
            return False
        contact_store.save(conn, contact, now)
        _record(conn, contact, now, who, "contact.unsubscribed", {"status": contact.status})
    return True
