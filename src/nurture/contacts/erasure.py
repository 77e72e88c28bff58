"""Personal data (GDPR): export everything held about a contact, or erase it.

Both are use cases the API, the CLI and the console call alike; both write an ``audit_log``
entry naming who did it, in the same transaction as what they did.

The erasure keeps one thing: a suppression row keyed by the SHA-256 of the normalised address
(reason ``erased``), so that a later import, webhook or rule finds the address suppressed and
mails it nothing, transactional mail included. A plain hash rather than an HMAC keyed by
``NURTURE_SECRET_KEY``: a rotated key would silently un-suppress every erased address, and the
hash is only ever compared, never shown.

Concurrency with a running send (``messaging.deliver``): the erasure locks the contact row
first; a send claims its ``messages`` row only after ``hold_for_send`` found the contact under a
share lock in the claim's transaction. So either the claim committed first (the provider may
get that one message, whose row the erasure then strips of address and subject), or the erasure
did and the send finds no contact and records a ``skipped`` message without an address.
"""

from __future__ import annotations

import base64
import logging
from contextlib import AbstractContextManager, nullcontext
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Connection

from nurture.contacts.suppression import email_hash
from nurture.database.engine import Database
from nurture.errors import NotFound
from nurture.storage import audit
from nurture.storage import personal_data as store
from nurture.storage import suppressions as suppression_store

log = logging.getLogger("nurture.contacts")

EXPORT_FORMAT = "nurture.contact-export/1"


@dataclass(frozen=True)
class ErasureReport:
    """What an erasure removed; also the ``detail`` of its audit entry."""

    contact_id: int
    erased_at: datetime
    email_hash: str | None
    events_redacted: int
    events_closed: int
    messages_redacted: int
    jobs_cancelled: int
    jobs_blanked: int
    suppressions_kept: int
    deleted: dict[str, int] = field(default_factory=dict)
    audit_id: int = 0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _transaction(db_or_conn: Database | Connection) -> AbstractContextManager[Connection]:
    if isinstance(db_or_conn, Connection):
        return nullcontext(db_or_conn)  # the caller's transaction: it commits or rolls back
    return db_or_conn.begin()


def _keys(contact: dict[str, Any], idents: list[dict[str, Any]]) -> list[str]:
    """The partitioning keys events may name the contact by (``ContactRef.key``)."""
    keys = [f"{i['kind']}:{i['value']}" for i in idents]
    if contact.get("email"):
        keys.append("email:" + contact["email"])
    return keys


def erase_contact(
    db_or_conn: Database | Connection,
    contact_id: int,
    *,
    actor: str,
    now: datetime,
    client_addr: str | None = None,
) -> ErasureReport:
    """Erase a contact's personal data; raises ``NotFound`` when there is no such contact.

    ``erase_contact(db_or_conn, contact_id, *, actor, now, client_addr=None) -> ErasureReport``

    - ``db_or_conn``: a ``Database`` (one transaction is opened and committed here) or a
      ``Connection`` inside the caller's transaction (nothing is committed here).
    - ``actor``: who asked, as the audit log spells it: ``key:<api key name>``,
      ``user:<name>`` (the console) or ``cli:<os user>``.
    - ``now``: aware UTC; ``client_addr``: the resolved client address, ``None`` for the CLI.

    Deleted: the contact, its identities, timeline, tasks, orders, enrolments, score ledger,
    rule fires and Notion page links. Blanked: its events' payloads (pending ones are closed),
    its messages' address and subject, every job payload (unfinished jobs are cancelled).
    Kept: the hashed ``erased`` suppression and the audit entry (which holds no address).
    """
    with _transaction(db_or_conn) as conn:
        contact = store.lock_contact(conn, contact_id)
        if contact is None:
            raise NotFound(f"no contact {contact_id}")
        held = store.held(conn, contact_id)
        keys = _keys(contact, held["identities"])
        hashed = email_hash(contact.get("email"))
        redacted, closed = store.redact_events(conn, contact_id, keys, now)
        messages = store.redact_messages(conn, contact_id)
        cancelled, blanked = store.cancel_jobs(conn, contact_id, now)
        kept = store.detach_suppressions(conn, contact_id)
        if hashed is not None and suppression_store.add(conn, None, hashed, "erased", now):
            kept += 1
        deleted = store.delete_owned(conn, contact_id)
        report = ErasureReport(
            contact_id=contact_id,
            erased_at=now,
            email_hash=hashed,
            events_redacted=redacted,
            events_closed=closed,
            messages_redacted=messages,
            jobs_cancelled=cancelled,
            jobs_blanked=blanked,
            suppressions_kept=kept,
            deleted=deleted,
        )
        detail = report.as_dict()
        detail.pop("erased_at")
        detail.pop("audit_id")
        audit_id = audit.record(
            conn,
            at=now,
            actor=actor,
            action="contact.erase",
            target_kind="contact",
            target_id=str(contact_id),
            detail=detail,
            client_addr=client_addr,
        )
    log.info(
        "contact erased",
        extra={"action": "contact.erase", "contact_id": contact_id, "actor": actor},
    )
    return ErasureReport(**{**report.as_dict(), "audit_id": audit_id})


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}  # column names are str subclasses
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, bytes | memoryview):
        raw = bytes(value)
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            return {"base64": base64.b64encode(raw).decode()}
    return value


def export_contact(
    db_or_conn: Database | Connection,
    contact_id: int,
    *,
    actor: str,
    now: datetime,
    client_addr: str | None = None,
) -> dict[str, Any]:
    """Everything held about a contact as one JSON-ready dict; raises ``NotFound``.

    ``export_contact(db_or_conn, contact_id, *, actor, now, client_addr=None) -> dict``, same
    arguments as ``erase_contact``. The export is audited (``contact.export``) because it hands
    personal data out. Sections: ``contact``, ``identities``, ``events`` (with the raw bodies as
    received), ``timeline``, ``messages``, ``tasks``, ``orders``, ``order_lines``,
    ``enrollments``, ``enrollment_steps``, ``score_ledger``, ``rule_fires``, ``jobs``,
    ``suppressions``, ``audit`` (who changed or exported this contact before).
    """
    with _transaction(db_or_conn) as conn:
        contact = store.lock_contact(conn, contact_id)
        if contact is None:
            raise NotFound(f"no contact {contact_id}")
        held = store.held(conn, contact_id)
        events = store.contact_events(conn, contact_id, _keys(contact, held["identities"]))
        hashed = email_hash(contact.get("email"))
        history = [
            entry
            for entry in audit.recent(
                conn, limit=1000, target_kind="contact", target_id=str(contact_id)
            )
            # An id SQLite handed out again after an erasure: not this person's history.
            if contact["created_at"] is None or entry["at"] >= contact["created_at"]
        ]
        out: dict[str, Any] = {
            "format": EXPORT_FORMAT,
            "exported_at": now,
            "contact": contact,
            **held,
            "events": events,
            "suppressions": store.suppressions_of(conn, contact_id, hashed),
            "audit": history,
        }
        audit.record(
            conn,
            at=now,
            actor=actor,
            action="contact.export",
            target_kind="contact",
            target_id=str(contact_id),
            detail={"events": len(events), "messages": len(held["messages"])},
            client_addr=client_addr,
        )
    result: dict[str, Any] = _jsonable(out)
    return result
