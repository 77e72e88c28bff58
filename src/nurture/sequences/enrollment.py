"""Enrolling, ending and completing enrollments, always inside the caller's transaction.

Enrolling plans every step at once: the enrollment row, one row per step (scheduled, or skipped
with the reason) and one ``sequence_step`` job per scheduled step, keyed
``seq:{enrollment_id}:{step_id}``, all through the ``Connection`` given, so they commit with
the event (or the API call) that caused them, or not at all. Cancel and reschedule live in
``reschedule``; running a step in ``runner``.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import Connection

from nurture import jobs
from nurture.clock import ensure_utc
from nurture.core.contacts import ContactState
from nurture.errors import NotFound
from nurture.sequences import reschedule
from nurture.sequences.common import (
    KIND,
    Enrolment,
    describe,
    step_key,
    step_payload,
    zone,
)
from nurture.sequences.models import Sequence, SequenceBook
from nurture.sequences.plan import PlannedStep, plan
from nurture.sequences.sinks import Sink
from nurture.storage import enrollments as store


class SequenceService:
    """Enrol, exit, cancel and re-plan, always inside the caller's transaction."""

    def __init__(self, book: SequenceBook, *, time_scale: float = 1.0) -> None:
        self.book = book
        self.time_scale = time_scale

    def sequence(self, sequence_id: str) -> Sequence:
        seq = self.book.get(sequence_id)
        if seq is None:
            raise NotFound(f"no sequence {sequence_id!r}")
        return seq

    # -- planning ---------------------------------------------------------------------------

    def plan(
        self,
        seq: Sequence,
        contact: ContactState | None,
        anchor: datetime,
        now: datetime,
        anchored_on_event: bool,
    ) -> list[PlannedStep]:
        where = None
        if seq.spec.window is not None:
            w = seq.spec.window
            wanted = contact.time_zone if (w.timezone == "contact" and contact) else None
            where = zone(wanted if w.timezone == "contact" else w.timezone) or ZoneInfo(w.fallback)
        return plan(
            seq.timings,
            anchor=anchor,
            now=now,
            anchored_on_event=anchored_on_event,
            min_lead=seq.spec.min_lead,
            window=seq.window,
            zone=where,
            time_scale=self.time_scale,
        )

    # -- enrol ------------------------------------------------------------------------------

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
        defer: bool = False,
    ) -> Enrolment:
        """Enrol ``contact`` under ``key`` and plan every step; a no-op that says why when a
        tombstone, a live enrollment or the re-entry policy forbids it.

        The signup path (re-entry ``after_exit``, the default) is one statement, the
        enrollment (it also checks the tombstones, and the partial unique index refuses a second
        live enrollment, even a concurrent transaction's); its step rows and step jobs go through
        ``sink.plan``, which writes them with the rest of the processing batch (see
        ``nurture.intake.deferred``). Only a refused insert reads why.

        ``defer``: the enrollment too may be written with the batch (PostgreSQL), and the result
        is then what the insert will do unless it is refused; the refusal is noted on the
        timeline at the batch's insert, as it would have been here. For the processing step,
        which does not look at the result.
        """
        base = {"sequence": seq.id, "key": key}
        reentry = seq.spec.reentry
        if reentry != "after_exit":
            sink.settle()  # the reads below must see the batch's enrollments
            tomb = store.tombstone(conn, seq.id, key)
            if tomb is not None:
                result, kind, detail = self._tombstoned(tomb, base)
                sink.note(kind, detail, rule_id)
                return result
            current = store.live(conn, seq.id, key)
            if current is not None:
                if reentry != "always":
                    result, kind, detail = self._duplicate(current, base)
                    sink.note(kind, detail, rule_id)
                    return result
                self.end(conn, current, "exited", "re-entered", now, sink)
            elif reentry == "never":
                previous = store.latest(conn, seq.id, key)
                if previous is not None:
                    sink.note(
                        "sequence.not_enrolled",
                        {**base, "reason": "reentry: never", "enrollment_id": previous["id"]},
                        rule_id,
                    )
                    return Enrolment("not_reentering", previous["id"])
        anchor_at = ensure_utc(anchor) if anchor is not None else now
        planned = self.plan(seq, contact, anchor_at, now, anchor is not None)
        values: dict[str, Any] = {
            "sequence_id": seq.id,
            "key": key,
            "contact_id": contact.id,
            "anchor_at": anchor_at,
            "enrolled_at": now,
            "event_id": event_id,
            "rule_id": rule_id,
            "reschedules": 0,
        }
        # With the batch when the caller can take the outcome on trust (the processing step),
        # and unless it ends at once (nothing scheduled: ``complete`` needs the row now).
        scheduled = any(p.scheduled for p in planned)
        reserved = sink.reserve(conn, seq.id, key, now) if defer and scheduled else None
        inserted = reserved if reserved is not None else store.insert_live(conn, values)
        if inserted is None:
            # Refused: a tombstone, or a live enrollment (possibly a concurrent one's).
            result, kind, detail = self._refusal(conn, seq.id, key, base)
            sink.note(kind, detail, rule_id)
            return result
        enrollment_id = inserted
        steps = [
            {
                "enrollment_id": enrollment_id,
                "step_id": p.id,
                "position": p.position,
                "status": "scheduled" if p.scheduled else "skipped",
                "due_at": p.due_at,
                "reason": p.skip,
                "updated_at": now,
            }
            for p in planned
        ]
        step_jobs = self.step_jobs(enrollment_id, contact.id, planned, now)
        note = sink.note(
            "sequence.enrolled",
            {
                **base,
                "enrollment_id": enrollment_id,
                "anchor_at": anchor_at.isoformat(),
                "steps": [describe(p) for p in planned],
            },
            rule_id,
        )
        if reserved is None:
            sink.plan(conn, steps, step_jobs, now)
        else:

            def refused(conn: Connection) -> None:
                # The batch's insert refused it: say why, where the enrolment was noted.
                _, kind, detail = self._refusal(conn, seq.id, key, base)
                if note is not None:
                    note["kind"], note["detail"] = kind, detail

            sink.enrol({**values, "id": reserved}, steps, step_jobs, refused)
        if not scheduled:
            self.complete(conn, enrollment_id, seq.id, now, sink)
        return Enrolment("enrolled", enrollment_id, planned)

    @staticmethod
    def step_jobs(
        enrollment_id: int, contact_id: int, planned: list[PlannedStep], now: datetime
    ) -> list[dict[str, Any]]:
        """One job per scheduled step, as rows for ``jobs.insert_many`` (no ``JobSpec`` built and
        validated per step: these keys and kinds are valid by construction)."""
        return [
            {
                "kind": KIND,
                "key": step_key(enrollment_id, p.id),
                "status": "scheduled",
                "run_at": p.due_at,
                "attempts": 0,
                "max_attempts": None,
                "payload": step_payload(enrollment_id, contact_id, p.id),
                "contact_id": contact_id,
                "enrollment_id": enrollment_id,
                "created_at": now,
                "updated_at": now,
            }
            for p in planned
            if p.scheduled
        ]

    @staticmethod
    def _refusal(
        conn: Connection, sequence_id: str, key: str, base: dict[str, Any]
    ) -> tuple[Enrolment, str, dict[str, Any]]:
        """Why an insert was refused: the outcome and its timeline note."""
        tomb = store.tombstone(conn, sequence_id, key)
        if tomb is not None:
            return SequenceService._tombstoned(tomb, base)
        return SequenceService._duplicate(store.live(conn, sequence_id, key), base)

    @staticmethod
    def _tombstoned(
        tomb: Mapping[str, Any], base: dict[str, Any]
    ) -> tuple[Enrolment, str, dict[str, Any]]:
        detail = {**base, "reason": f"{tomb['reason']} before it arrived (tombstone)"}
        return Enrolment("tombstoned", None), "sequence.not_enrolled", detail

    @staticmethod
    def _duplicate(
        current: Mapping[str, Any] | None, base: dict[str, Any]
    ) -> tuple[Enrolment, str, dict[str, Any]]:
        detail = {**base, "reason": "already enrolled"}
        if current is not None:
            detail["enrollment_id"] = current["id"]
        result = Enrolment("duplicate", current["id"] if current else None)
        return result, "sequence.not_enrolled", detail

    # -- end --------------------------------------------------------------------------------

    def end(
        self,
        conn: Connection,
        enrollment: Mapping[str, Any],
        status: str,
        reason: str,
        now: datetime,
        sink: Sink,
        rule_id: str | None = None,
    ) -> bool:
        """Exit or cancel: the enrollment and all its pending steps and jobs, atomically."""
        sink.settle()
        enrollment_id = int(enrollment["id"])
        if not store.end(conn, enrollment_id, status, reason, now):
            return False
        cancelled = store.cancel_steps(conn, enrollment_id, f"{status}: {reason}", now)
        jobs.cancel_where(conn, enrollment_id=enrollment_id, kinds=[KIND], now=now)
        data = {
            "sequence": enrollment["sequence_id"],
            "enrollment_id": enrollment_id,
            "key": enrollment["key"],
            "status": status,
            "reason": reason,
            "cancelled_steps": cancelled,
        }
        sink.note(f"sequence.{status}", data, rule_id)
        sink.emit("sequence.exited", data)
        return True

    def complete(
        self, conn: Connection, enrollment_id: int, sequence_id: str, now: datetime, sink: Sink
    ) -> None:
        if store.end(conn, enrollment_id, "completed", "every step ran or was skipped", now):
            data = {"sequence": sequence_id, "enrollment_id": enrollment_id}
            sink.note("sequence.completed", data)
            sink.emit("sequence.completed", data)

    def complete_if_done(
        self, conn: Connection, enrollment: Mapping[str, Any], now: datetime, sink: Sink
    ) -> None:
        sink.settle()
        if enrollment["status"] == "active" and store.scheduled_left(conn, enrollment["id"]) == 0:
            self.complete(conn, enrollment["id"], enrollment["sequence_id"], now, sink)

    def exit_contact(
        self,
        conn: Connection,
        contact_id: int,
        sequence_ids: list[str] | None,
        reason: str,
        now: datetime,
        sink: Sink,
        rule_id: str | None = None,
    ) -> int:
        sink.settle()  # enrollments waiting for the batch's insert are live too
        ended = 0
        for row in store.live_for_contact(conn, contact_id, sequence_ids):
            ended += self.end(conn, row, "exited", reason, now, sink, rule_id)
        return ended

    # -- cancel and reschedule (``reschedule``) ---------------------------------------------

    def cancel(
        self,
        conn: Connection,
        seq: Sequence,
        key: str,
        *,
        reason: str,
        now: datetime,
        sink: Sink,
        event_id: int | None = None,
    ) -> bool:
        sink.settle()
        return reschedule.cancel(
            self, conn, seq, key, reason=reason, now=now, sink=sink, event_id=event_id
        )

    def reschedule(
        self,
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
        sink.settle()
        return reschedule.reschedule(
            self,
            conn,
            seq,
            old_key,
            new_key,
            anchor,
            contact=contact,
            now=now,
            sink=sink,
            event_id=event_id,
        )
