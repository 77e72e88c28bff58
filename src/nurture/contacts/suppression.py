"""Suppression and consent: who may get marketing mail, and who may get mail at all.

Hard bounce, complaint and unsubscribe suppress marketing mail; a hard-bounced (or erased)
address gets no mail at all, transactional included. Rows are keyed by a hash of the address,
so an erased contact stays suppressed without keeping the address itself.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import Connection

from nurture.contacts import refresh as contact_refresh
from nurture.core.contacts import ContactState
from nurture.core.events import email_hash as email_hash  # re-exported: the hash rule
from nurture.storage import contacts as contact_store
from nurture.storage import personal_data
from nurture.storage import suppressions as store
from nurture.storage import timeline as timeline_store

REASONS = frozenset({"unsubscribed", "complained", "bounced", "erased", "manual"})
# Reasons that block even transactional mail: the address does not exist (or must be forgotten).
BLOCKS_ALL = frozenset({"bounced", "erased"})


def carry_over(conn: Connection, created: Sequence[ContactState]) -> int:
    """New contacts whose address is already suppressed (unsubscribed, bounced, erased...)
    start with the matching status; the caller saves the dirty ones. How many changed."""
    hashes = {s.id: email_hash(s.email) for s in created if s.email}
    found = store.reasons_by_hash(conn, [h for h in hashes.values() if h])
    changed = 0
    for state in created:
        changed += state.carry_suppressions(found.get(hashes.get(state.id) or "", set()))
    return changed


def carry_over_emails(conn: Connection, emails: Sequence[str], now: datetime) -> int:
    """``carry_over`` for contacts a bulk import inserted by address; only the few whose
    address is suppressed are loaded and saved."""
    by_hash = {email_hash(e): e for e in emails}
    found = store.reasons_by_hash(conn, [h for h in by_hash if h])
    if not found:
        return 0
    states = contact_store.load_many(conn, emails=sorted(by_hash[h] for h in found), ids=[])
    changed = [
        s for s in states if s.carry_suppressions(found.get(email_hash(s.email) or "", set()))
    ]
    contact_store.save_many(conn, changed, now)
    return len(changed)


def suppress(
    conn: Connection,
    contact: ContactState,
    reason: str,
    now: datetime,
    *,
    event_id: int | None = None,
) -> bool:
    """Record a suppression; ``True`` if it is new. The caller degrades ``contact.status``."""
    if reason not in REASONS:
        raise ValueError(f"unknown suppression reason {reason!r}")
    return store.add(conn, contact.id, email_hash(contact.email), reason, now, event_id)


def unsuppress(conn: Connection, contact: ContactState, reason: str | None = None) -> int:
    """Lift suppressions (an explicit re-subscribe); the status resets when none remain."""
    removed = store.remove(conn, contact.id, email_hash(contact.email), reason)
    if (
        not store.reasons(conn, contact.id, email_hash(contact.email))
        and contact.status != "subscribed"
    ):
        contact.status = "subscribed"
        contact.dirty = True
    return removed


def check(
    conn: Connection, contact_id: int | None, email: str | None, *, transactional: bool
) -> str | None:
    """The reason this send must not happen, or ``None`` when it may."""
    reasons = store.reasons(conn, contact_id, email_hash(email))
    blocking = reasons & BLOCKS_ALL if transactional else reasons
    return sorted(blocking)[0] if blocking else None


def check_many(
    conn: Connection, targets: Sequence[tuple[int | None, str | None, bool]]
) -> list[str | None]:
    """``check`` for many ``(contact id, email, transactional)`` at once, in one query."""
    hashes = [email_hash(email) for _, email, _ in targets]
    by_id, by_hash = store.reasons_many(
        conn,
        [cid for cid, _, _ in targets if cid is not None],
        [h for h in hashes if h is not None],
    )
    out: list[str | None] = []
    for (cid, _, transactional), hashed in zip(targets, hashes, strict=True):
        reasons = by_id.get(cid, set()) if cid is not None else set()
        if hashed is not None:
            reasons = reasons | by_hash.get(hashed, set())
        blocking = reasons & BLOCKS_ALL if transactional else reasons
        out.append(sorted(blocking)[0] if blocking else None)
    return out


def hold_for_send(conn: Connection, contact_id: int | None) -> bool:
    """Called in the transaction that claims a message: ``False`` when the contact is gone
    (erased since the send's checks). Otherwise the contact row stays share-locked until that
    transaction commits, so an erasure waits and then strips the claimed row of its address."""
    return contact_id is None or personal_data.hold_contact(conn, int(contact_id))


def hold_for_send_many(conn: Connection, contact_ids: Sequence[int]) -> set[int]:
    """``hold_for_send`` for a batch's claim: the contacts still there, each share-locked."""
    return personal_data.hold_contacts(conn, contact_ids)


def resubscribe(
    conn: Connection, contact_id: int, now: datetime, *, by: str
) -> dict[str, object] | None:
    """The explicit re-subscribe (the person asked again): every suppression of the contact and
    its address is lifted, the status goes back to ``subscribed``, and the timeline says who did
    it. Events never do this; only this call does. ``None`` when there is no such contact."""
    contact = contact_store.load(conn, contact_id)
    if contact is None:
        return None
    lifted = sorted(store.reasons(conn, contact.id, email_hash(contact.email)))
    previous = contact.status
    store.remove(conn, contact.id, email_hash(contact.email))
    if previous != "subscribed":
        contact.status = "subscribed"
        contact_store.save(conn, contact, now)
        # Segmentations may read the status: the rules step recomputes them for this event.
        contact_refresh.queue_changed(conn, [contact.id], now, "resubscribed")
    detail = {"previous_status": previous, "lifted": lifted, "by": by}
    timeline_store.append(
        conn,
        [
            {
                "contact_id": contact.id,
                "event_id": None,
                "at": now,
                "kind": "contact.resubscribed",
                "rule_id": None,
                "detail": detail,
            }
        ],
    )
    return {"contact_id": contact.id, "status": "subscribed", **detail}
