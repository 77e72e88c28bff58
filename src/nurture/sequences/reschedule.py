"""Cancel and reschedule: a booking's enrollment follows its booking.

A cancellation ends the live enrollment of its key and always leaves a tombstone, and a
reschedule (new key, old key in ``previous_key``) re-anchors the old key's enrollment and
re-plans what has not run yet (past steps stay skipped, ``min_lead`` applies again), so a
booking message that arrives after its cancellation or reschedule never enrols.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any, Protocol

from sqlalchemy import Connection

from nurture import jobs
from nurture.clock import ensure_utc
from nurture.core.contacts import ContactState
from nurture.sequences.common import Enrolment, describe, step_job, step_key
from nurture.sequences.models import Sequence
from nurture.sequences.plan import PlannedStep
from nurture.sequences.sinks import Sink
from nurture.storage import contacts as contact_store
from nurture.storage import enrollments as store


class SequenceService(Protocol):
    """What cancel and reschedule use of ``enrollment.SequenceService`` (which delegates its
    ``cancel`` and ``reschedule`` here, so this module cannot import it)."""

    def plan(
        self,
        seq: Sequence,
        contact: ContactState | None,
        anchor: datetime,
        now: datetime,
        anchored_on_event: bool,
    ) -> list[PlannedStep]: ...

    def enroll(
        self,
        conn: Connection,
        seq: Sequence,
        contact: ContactState,
        key: str,
        *,
        now: datetime,
        sink: Sink,
        anchor: datetime | None = None,
        event_id: int | None = None,
        rule_id: str | None = None,
    ) -> Enrolment: ...

    def end(
        self,
        conn: Connection,
        enrollment: Mapping[str, Any],
        status: str,
        reason: str,
        now: datetime,
        sink: Sink,
        rule_id: str | None = None,
    ) -> bool: ...

    def complete_if_done(
        self, conn: Connection, enrollment: Mapping[str, Any], now: datetime, sink: Sink
    ) -> None: ...


def cancel(
    service: SequenceService,
    conn: Connection,
    seq: Sequence,
    key: str,
    *,
    reason: str,
    now: datetime,
    sink: Sink,
    event_id: int | None = None,
) -> bool:
    """Cancel the live enrollment of ``key``; always leave a tombstone, so a booking that
    arrives after its cancellation (or is delivered again) never enrols."""
    store.add_tombstone(conn, seq.id, key, "cancelled", event_id, now)
    current = store.live(conn, seq.id, key)
    if current is None:
        sink.note(
            "sequence.tombstone",
            {"sequence": seq.id, "key": key, "reason": f"{reason} with no live enrollment"},
        )
        return False
    return service.end(conn, current, "cancelled", reason, now, sink)


def reschedule(
    service: SequenceService,
    conn: Connection,
    seq: Sequence,
    old_key: str,
    new_key: str,
    anchor: datetime,
    *,
    contact: ContactState | None,
    now: datetime,
    sink: Sink,
    event_id: int | None = None,
) -> str:
    """Re-anchor the old booking's enrollment to the new one and re-plan what has not run.

    Returns what happened: ``rescheduled``, ``enrolled`` (nothing live for the old booking:
    the new one enrols like a fresh booking), ``cancelled`` or ``ignored``.
    """
    anchor = ensure_utc(anchor)
    moved = old_key != new_key
    if moved:
        store.add_tombstone(conn, seq.id, old_key, "rescheduled", event_id, now)
    current = store.live(conn, seq.id, old_key)
    if moved and store.tombstone(conn, seq.id, new_key) is not None:
        # The new booking was cancelled before this reschedule arrived.
        if current is not None:
            service.end(conn, current, "cancelled", f"{new_key} was cancelled", now, sink)
        return "cancelled"
    twin = store.live(conn, seq.id, new_key) if moved else None
    if twin is not None:  # the new booking already enrolled by itself
        if current is not None:
            reason = f"replaced by enrollment {twin['id']}"
            service.end(conn, current, "cancelled", reason, now, sink)
        return "ignored"
    if current is None:
        previous = store.latest(conn, seq.id, old_key)
        if previous is not None and previous["status"] != "completed":
            sink.note(
                "sequence.not_enrolled",
                {
                    "sequence": seq.id,
                    "key": new_key,
                    "reason": f"the rescheduled booking's enrollment was {previous['status']}",
                },
            )
            return "ignored"
        if contact is None:
            return "ignored"
        result = service.enroll(
            conn, seq, contact, new_key, now=now, sink=sink, anchor=anchor, event_id=event_id
        )
        return "enrolled" if result.created else result.status
    _replan(service, conn, seq, current, new_key, anchor, contact, now, sink, event_id)
    return "rescheduled"


def _replan(
    service: SequenceService,
    conn: Connection,
    seq: Sequence,
    enrollment: dict[str, Any],
    new_key: str,
    anchor: datetime,
    contact: ContactState | None,
    now: datetime,
    sink: Sink,
    event_id: int | None,
) -> None:
    enrollment_id = int(enrollment["id"])
    store.reanchor(conn, enrollment_id, new_key, anchor, event_id)
    rows = {s["step_id"]: s for s in store.steps(conn, [enrollment_id])[enrollment_id]}
    owner = contact or contact_store.load(conn, enrollment["contact_id"])
    planned = service.plan(seq, owner, anchor, now, True)
    changes = []
    for p in planned:
        row = rows.get(p.id)
        # What ran (sent, or skipped when its time came) stays; only plans move.
        if row is None or row["status"] == "sent" or row["ran_at"] is not None:
            continue
        key = step_key(enrollment_id, p.id)
        values: dict[str, Any] = {"due_at": p.due_at, "updated_at": now}
        if p.scheduled:
            values.update(status="scheduled", reason=None)
            store.update_step(conn, enrollment_id, p.id, values, only_if=None)
            spec = step_job(enrollment_id, enrollment["contact_id"], p.id, p.due_at)
            jobs.enqueue(
                conn,
                kind=spec.kind,
                key=spec.key,
                run_at=spec.run_at,
                payload=spec.payload,
                contact_id=spec.contact_id,
                enrollment_id=spec.enrollment_id,
                replace=True,
                now=now,
            )
        else:
            values.update(status="skipped", reason=p.skip)
            store.update_step(conn, enrollment_id, p.id, values, only_if=None)
            jobs.cancel(conn, key, now=now)
        changes.append(describe(p))
    sink.note(
        "sequence.rescheduled",
        {
            "sequence": seq.id,
            "enrollment_id": enrollment_id,
            "from_key": enrollment["key"],
            "key": new_key,
            "anchor_at": anchor.isoformat(),
            "steps": changes,
        },
    )
    service.complete_if_done(conn, {**enrollment, "status": "active"}, now, sink)
