"""Everything held about one contact, across tables: the export and the erasure (GDPR).

The erasure removes or blanks every row that names the person and keeps only what carries no
personal data (a message's status and provider id, an event's type and time, the suppression by
address hash). Rows that outlive the contact lose their ``contact_id`` too: SQLite reuses the
highest row id, so a contact created after the erasure could otherwise inherit them.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, String, Table, and_, cast, delete, literal, or_, select, update

from nurture.schema import tables as t

# Jobs not yet finished: an erasure cancels them (a running attempt finishes, none follows).
_UNFINISHED = ("scheduled", "failed", "running", "dead")


# -- export --------------------------------------------------------------------------------------


def _rows(
    conn: Connection, table: Table, *where: Any, order: Sequence[Any] = ()
) -> list[dict[str, Any]]:
    stmt = select(table).where(*where).order_by(*(order or [table.c.id]))
    return [dict(r) for r in conn.execute(stmt).mappings()]


def contact_events(conn: Connection, contact_id: int, keys: Sequence[str]) -> list[dict[str, Any]]:
    """The contact's events: resolved to it, or still pending under one of its keys."""
    return _rows(conn, t.events, _events_of(contact_id, keys))


def held(conn: Connection, contact_id: int) -> dict[str, list[dict[str, Any]]]:
    """Every row about the contact, table by table (events apart: see ``contact_events``)."""
    order_rows = _rows(conn, t.orders, t.orders.c.contact_id == contact_id)
    enrollment_rows = _rows(conn, t.enrollments, t.enrollments.c.contact_id == contact_id)
    return {
        "identities": _rows(conn, t.identities, t.identities.c.contact_id == contact_id),
        "timeline": _rows(conn, t.timeline, t.timeline.c.contact_id == contact_id),
        "messages": _rows(conn, t.messages, t.messages.c.contact_id == contact_id),
        "tasks": _rows(conn, t.tasks, t.tasks.c.contact_id == contact_id),
        "orders": order_rows,
        "order_lines": _rows(
            conn, t.order_lines, t.order_lines.c.order_id.in_([o["id"] for o in order_rows])
        ),
        "enrollments": enrollment_rows,
        "enrollment_steps": _rows(
            conn,
            t.enrollment_steps,
            t.enrollment_steps.c.enrollment_id.in_([e["id"] for e in enrollment_rows]),
            order=(t.enrollment_steps.c.enrollment_id, t.enrollment_steps.c.position),
        ),
        "score_ledger": _rows(conn, t.score_ledger, t.score_ledger.c.contact_id == contact_id),
        "rule_fires": _rows(
            conn,
            t.rule_fires,
            t.rule_fires.c.contact_id == contact_id,
            order=[t.rule_fires.c.rule_id],
        ),
        "jobs": _rows(conn, t.jobs, t.jobs.c.contact_id == contact_id),
        "consents": _rows(conn, t.consents, t.consents.c.contact_id == contact_id),
    }


def suppressions_of(
    conn: Connection, contact_id: int, email_hash: str | None
) -> list[dict[str, Any]]:
    conds = [t.suppressions.c.contact_id == contact_id]
    if email_hash is not None:
        conds.append(t.suppressions.c.email_hash == email_hash)
    return _rows(conn, t.suppressions, or_(*conds))


# -- erasure -------------------------------------------------------------------------------------


def lock_contact(conn: Connection, contact_id: int) -> dict[str, Any] | None:
    """The contact row, locked for the rest of the transaction (PostgreSQL; SQLite's writer
    lock already serialises): a send claiming a message for it waits, or has committed."""
    row = (
        conn.execute(select(t.contacts).where(t.contacts.c.id == contact_id).with_for_update())
        .mappings()
        .first()
    )
    return dict(row) if row else None


def hold_contact(conn: Connection, contact_id: int) -> bool:
    """``True`` if the contact exists; a share lock keeps an erasure out until commit."""
    # KEY SHARE: conflicts with the erasure's DELETE, not with the processor's UPDATEs.
    stmt = select(t.contacts.c.id).where(t.contacts.c.id == contact_id)
    stmt = stmt.with_for_update(read=True, key_share=True)
    return conn.execute(stmt).first() is not None


def hold_contacts(conn: Connection, contact_ids: Sequence[int]) -> set[int]:
    """``hold_contact`` for a batch of sends: the ids that still exist, each share-locked."""
    if not contact_ids:
        return set()
    stmt = select(t.contacts.c.id).where(t.contacts.c.id.in_(sorted(set(contact_ids))))
    # Locked in id order, like every other multi-row lock, so two batches cannot deadlock.
    stmt = stmt.order_by(t.contacts.c.id).with_for_update(read=True, key_share=True)
    return {int(r[0]) for r in conn.execute(stmt)}


def _events_of(contact_id: int, keys: Sequence[str]) -> Any:
    resolved = t.events.c.contact_id == contact_id
    if not keys:
        return resolved
    # Not yet processed: only the partitioning key names the contact.
    return or_(resolved, and_(t.events.c.contact_id.is_(None), t.events.c.contact_key.in_(keys)))


def redact_events(
    conn: Connection, contact_id: int, keys: Sequence[str], now: datetime
) -> tuple[int, int]:
    """Blank the payloads of the contact's events, keeping type and times; an event still
    pending is closed so that processing it cannot re-create the contact. ``(redacted,
    closed)``. The dedupe key stays: a sender re-delivering the same event gets ``duplicate``."""
    which = _events_of(contact_id, keys)
    closed = conn.execute(
        update(t.events)
        .where(which, t.events.c.status == "pending")
        .values(status="processed", processed_at=now)
    ).rowcount
    # By type: the blank canonical keeps it. No id list, so no bound-parameter limit.
    types = list(conn.execute(select(t.events.c.type).where(which).distinct()).scalars())
    redacted = 0
    for type_ in types:
        redacted += conn.execute(
            update(t.events)
            .where(which, t.events.c.type == type_)
            .values(raw=None, content_type=None, contact_key=None, contact_id=None, error=None)
            .values(canonical={"type": type_, "contact": None, "data": {}, "erased": True})
        ).rowcount
    return redacted, int(closed)


def _erased_key(table: Table) -> Any:
    # Keys embed contact and enrolment ids, which SQLite hands out again once the highest row
    # is deleted: a kept key would make a later contact's send or step look already done.
    return literal("erased:", String) + cast(table.c.id, String)


def _enrollment_ids(contact_id: int) -> Any:
    return select(t.enrollments.c.id).where(t.enrollments.c.contact_id == contact_id)


def redact_messages(conn: Connection, contact_id: int) -> int:
    """Keep what happened to each message (status, provider id, times), not who or what."""
    return int(
        conn.execute(
            update(t.messages)
            .where(
                or_(
                    t.messages.c.contact_id == contact_id,
                    t.messages.c.enrollment_id.in_(_enrollment_ids(contact_id)),
                )
            )
            .values(key=_erased_key(t.messages), contact_id=None, enrollment_id=None)
            .values(to_address=None, subject=None, error=None)
        ).rowcount
    )


def cancel_jobs(conn: Connection, contact_id: int, now: datetime) -> tuple[int, int]:
    """Cancel the contact's unfinished jobs and blank every payload; ``(cancelled, blanked)``.

    A running attempt keeps its in-memory payload and finishes (``cancelled_at`` stops any
    retry); the send path re-checks the contact when it claims its message."""
    mine = or_(
        t.jobs.c.contact_id == contact_id, t.jobs.c.enrollment_id.in_(_enrollment_ids(contact_id))
    )
    unfinished = and_(mine, t.jobs.c.status.in_(_UNFINISHED), t.jobs.c.cancelled_at.is_(None))
    if conn.dialect.name == "postgresql":
        # Lock in id order, as the worker's finisher does, so the two wait instead of deadlock.
        locked = select(t.jobs.c.id).where(mine).order_by(t.jobs.c.id)
        conn.execute(locked.with_for_update()).all()
    cancelled = conn.execute(
        update(t.jobs)
        .where(unfinished, t.jobs.c.status != "running")
        .values(status="cancelled", cancelled_at=now, updated_at=now)
    ).rowcount
    cancelled += conn.execute(
        update(t.jobs).where(unfinished).values(cancelled_at=now, updated_at=now)
    ).rowcount
    blanked = conn.execute(
        update(t.jobs)
        .where(mine)
        .values(key=_erased_key(t.jobs), payload={"erased": True}, updated_at=now)
        .values(contact_id=None, enrollment_id=None, last_error=None)
    ).rowcount
    return int(cancelled), int(blanked)


def detach_suppressions(conn: Connection, contact_id: int) -> int:
    """Suppressions keyed by the address hash stay (without the contact id); those keyed only
    by the id (a contact without e-mail) mean nothing once the contact is gone."""
    conn.execute(
        delete(t.suppressions).where(
            t.suppressions.c.contact_id == contact_id, t.suppressions.c.email_hash.is_(None)
        )
    )
    return int(
        conn.execute(
            update(t.suppressions)
            .where(t.suppressions.c.contact_id == contact_id)
            .values(contact_id=None)
        ).rowcount
    )


# Rows of the contact's own, deleted with it (after the lines and steps that hang from them).
_OWNED: tuple[Table, ...] = (t.timeline, t.tasks, t.orders, t.enrollments, t.score_ledger)
_OWNED += (t.rule_fires, t.notion_pages, t.consents, t.identities)


def delete_owned(conn: Connection, contact_id: int) -> dict[str, int]:
    """Delete the contact and every row that belongs to it; the counts by table (explicit
    deletes rather than ON DELETE CASCADE: the counts go into the audit entry)."""
    orders = select(t.orders.c.id).where(t.orders.c.contact_id == contact_id)
    counts = {
        "order_lines": delete(t.order_lines).where(t.order_lines.c.order_id.in_(orders)),
        "enrollment_steps": delete(t.enrollment_steps).where(
            t.enrollment_steps.c.enrollment_id.in_(_enrollment_ids(contact_id))
        ),
        "enrollment_tombstones": delete(t.enrollment_tombstones).where(
            t.enrollment_tombstones.c.key == f"contact:{contact_id}"
        ),
    }
    for table in _OWNED:
        counts[str(table.name)] = delete(table).where(table.c.contact_id == contact_id)
    counts["contacts"] = delete(t.contacts).where(t.contacts.c.id == contact_id)
    return {name: int(conn.execute(stmt).rowcount) for name, stmt in counts.items()}
