"""Sequences: enrol, exit, cancel and re-plan inside the event's transaction; run each step as a
``sequence_step`` job that re-checks everything and sends through the delivery service.

Every change to an enrollment and its jobs goes through the ``Connection`` it is given, so it
commits with the event (or the API call) that caused it, or not at all. A step's job is keyed
``seq:{enrollment_id}:{step_id}``; that key is also the message key, so retries, replays and
several workers send a step at most once (the delivery service's claim).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy import Connection

from nurture import jobs
from nurture.clock import Clock, ensure_utc
from nurture.core.contacts import ContactState
from nurture.core.events import ContactRef, content_hash, partition_for
from nurture.errors import ConfigError, FieldProblem, InvalidFields, NotFound, ProviderError
from nurture.rules.expr import Expr, ExprError, Scope
from nurture.sequences.models import Sequence, SequenceBook
from nurture.sequences.models import load as load_book
from nurture.sequences.plan import PlannedStep, plan
from nurture.services import suppression
from nurture.services.context import ProcessingContext
from nurture.services.deliver import load_event
from nurture.services.rules import ENROLL_MARKERS, EXIT_MARKERS, contact_view, event_view
from nurture.services.templates import TemplateError, TemplateStore
from nurture.storage import contacts as contact_store
from nurture.storage import enrollments as store
from nurture.storage import events as event_store
from nurture.storage import messages as message_store
from nurture.storage import timeline as timeline_store
from nurture.storage.engine import Database

if TYPE_CHECKING:
    from nurture.bootstrap import Container
    from nurture.jobs import HandlerRegistry, JobContext
    from nurture.services.deliver import Delivery

log = logging.getLogger("nurture.sequences")

KIND = "sequence_step"


def step_key(enrollment_id: int, step_id: str) -> str:
    return f"seq:{enrollment_id}:{step_id}"


# -- where notes and derived events go -------------------------------------------------------


class Sink:
    """Timeline notes and derived events. While an event is processed they go to its context;
    elsewhere (API, job handler) ``DirectSink`` writes them itself."""

    def note(self, kind: str, detail: dict[str, Any], rule_id: str | None = None) -> None:
        raise NotImplementedError

    def emit(self, type_: str, data: dict[str, Any]) -> None:
        raise NotImplementedError


class ContextSink(Sink):
    def __init__(self, ctx: ProcessingContext) -> None:
        self.ctx = ctx

    def note(self, kind: str, detail: dict[str, Any], rule_id: str | None = None) -> None:
        self.ctx.note(kind, detail, rule_id)

    def emit(self, type_: str, data: dict[str, Any]) -> None:
        self.ctx.derive(type_, data)


class DirectSink(Sink):
    """Writes timeline rows and inserts derived events into the inbox on ``conn``."""

    def __init__(
        self, conn: Connection, contact: ContactState | None, now: datetime, partitions: int
    ) -> None:
        self.conn = conn
        self.contact = contact
        self.now = now
        self.partitions = partitions

    def note(self, kind: str, detail: dict[str, Any], rule_id: str | None = None) -> None:
        if self.contact is None:
            return
        row = {
            "contact_id": self.contact.id,
            "event_id": None,
            "at": self.now,
            "kind": kind,
            "rule_id": rule_id,
            "detail": detail,
        }
        timeline_store.append(self.conn, [row])

    def emit(self, type_: str, data: dict[str, Any]) -> None:
        contact = self.contact
        ref = (
            ContactRef(email=contact.email, identities=dict(contact.identities))
            if contact
            else None
        )
        canonical = {
            "type": type_,
            "occurred_at": self.now.isoformat(),
            "contact": ref.to_json() if ref else None,
            "data": data,
        }
        key = ref.key if ref else None
        # One end per enrollment, so this key makes a redone transaction insert it once.
        dedupe = "derived:" + content_hash("sequence", type_, data.get("enrollment_id"))
        event_store.insert_new(
            self.conn,
            [
                {
                    "source": "derived",
                    "type": type_,
                    "dedupe_key": dedupe,
                    "partition": partition_for(key, self.partitions),
                    "status": "pending",
                    "available_at": self.now,
                    "contact_key": key,
                    "contact_id": contact.id if contact else None,
                    "raw": None,
                    "content_type": None,
                    "canonical": canonical,
                    "received_at": self.now,
                    "occurred_at": self.now,
                    "depth": 1,
                    "parent_id": None,
                }
            ],
        )


# -- the service -----------------------------------------------------------------------------


@dataclass
class Enrolment:
    """What ``enroll`` did: ``enrolled``, ``duplicate``, ``tombstoned`` or ``not_reentering``."""

    status: str
    enrollment_id: int | None
    planned: list[PlannedStep] = field(default_factory=list)

    @property
    def created(self) -> bool:
        return self.status == "enrolled"


def _zone(name: str | None) -> ZoneInfo | None:
    if not name:
        return None
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return None


def parse_anchor(value: Any) -> datetime:
    """An anchor from CEL: an ISO 8601 string with an offset, or a timestamp."""
    if isinstance(value, datetime):
        return ensure_utc(value)
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value.strip())
        except ValueError:
            raise ExprError(f"anchor {value!r} is not an ISO 8601 date-time") from None
        if parsed.tzinfo is None:
            raise ExprError(f"anchor {value!r} has no offset (naive times are refused)")
        return ensure_utc(parsed)
    raise ExprError(f"anchor must be a date-time, not {type(value).__name__}")


def _key(expr: Expr | None, scope: Scope, contact: ContactState | None) -> str:
    if expr is None:
        if contact is None:
            raise ExprError("key: contact needs a contact")
        return f"contact:{contact.id}"
    value = expr.evaluate(scope)
    if value is None or value == "":
        raise ExprError(f"key {expr.source!r} is empty")
    return str(value)[:300]


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

    def _plan(
        self,
        seq: Sequence,
        contact: ContactState | None,
        anchor: datetime,
        now: datetime,
        anchored_on_event: bool,
    ) -> list[PlannedStep]:
        zone = None
        if seq.spec.window is not None:
            w = seq.spec.window
            wanted = contact.time_zone if (w.timezone == "contact" and contact) else None
            zone = _zone(wanted if w.timezone == "contact" else w.timezone) or ZoneInfo(w.fallback)
        return plan(
            seq.timings,
            anchor=anchor,
            now=now,
            anchored_on_event=anchored_on_event,
            min_lead=seq.spec.min_lead,
            window=seq.window,
            zone=zone,
            time_scale=self.time_scale,
        )

    @staticmethod
    def _job(enrollment_id: int, contact_id: int, step_id: str, run_at: datetime) -> jobs.JobSpec:
        return jobs.JobSpec(
            kind=KIND,
            key=step_key(enrollment_id, step_id),
            run_at=run_at,
            payload={"enrollment_id": enrollment_id, "step_id": step_id, "contact_id": contact_id},
            contact_id=contact_id,
            enrollment_id=enrollment_id,
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
    ) -> Enrolment:
        base = {"sequence": seq.id, "key": key}
        tomb = store.tombstone(conn, seq.id, key)
        if tomb is not None:
            sink.note(
                "sequence.not_enrolled",
                {**base, "reason": f"{tomb['reason']} before it arrived (tombstone)"},
                rule_id,
            )
            return Enrolment("tombstoned", None)
        # With the default re-entry policy the unique index alone detects a live duplicate
        # (insert_live returns None), which saves a query on the signup path.
        current = store.live(conn, seq.id, key) if seq.spec.reentry != "after_exit" else None
        if current is not None:
            if seq.spec.reentry != "always":
                sink.note(
                    "sequence.not_enrolled",
                    {**base, "reason": "already enrolled", "enrollment_id": current["id"]},
                    rule_id,
                )
                return Enrolment("duplicate", current["id"])
            self.end(conn, current, "exited", "re-entered", now, sink)
        elif seq.spec.reentry == "never":
            previous = store.latest(conn, seq.id, key)
            if previous is not None:
                sink.note(
                    "sequence.not_enrolled",
                    {**base, "reason": "reentry: never", "enrollment_id": previous["id"]},
                    rule_id,
                )
                return Enrolment("not_reentering", previous["id"])
        anchor_at = ensure_utc(anchor) if anchor is not None else now
        enrollment_id = store.insert_live(
            conn,
            {
                "sequence_id": seq.id,
                "key": key,
                "contact_id": contact.id,
                "anchor_at": anchor_at,
                "enrolled_at": now,
                "event_id": event_id,
                "rule_id": rule_id,
                "reschedules": 0,
            },
        )
        if enrollment_id is None:  # live already (possibly enrolled by a concurrent transaction)
            current = store.live(conn, seq.id, key)
            detail = {**base, "reason": "already enrolled"}
            if current is not None:
                detail["enrollment_id"] = current["id"]
            sink.note("sequence.not_enrolled", detail, rule_id)
            return Enrolment("duplicate", current["id"] if current else None)
        planned = self._plan(seq, contact, anchor_at, now, anchor is not None)
        store.insert_steps(
            conn,
            [
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
            ],
        )
        jobs.enqueue_many(
            conn,
            [self._job(enrollment_id, contact.id, p.id, p.due_at) for p in planned if p.scheduled],
            now=now,
        )
        sink.note(
            "sequence.enrolled",
            {
                **base,
                "enrollment_id": enrollment_id,
                "anchor_at": anchor_at.isoformat(),
                "steps": [_describe(p) for p in planned],
            },
            rule_id,
        )
        if not any(p.scheduled for p in planned):
            self.complete(conn, enrollment_id, seq.id, now, sink)
        return Enrolment("enrolled", enrollment_id, planned)

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
        ended = 0
        for row in store.live_for_contact(conn, contact_id, sequence_ids):
            ended += self.end(conn, row, "exited", reason, now, sink, rule_id)
        return ended

    # -- cancel and reschedule --------------------------------------------------------------

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
        return self.end(conn, current, "cancelled", reason, now, sink)

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
                self.end(conn, current, "cancelled", f"{new_key} was cancelled", now, sink)
            return "cancelled"
        twin = store.live(conn, seq.id, new_key) if moved else None
        if twin is not None:  # the new booking already enrolled by itself
            if current is not None:
                reason = f"replaced by enrollment {twin['id']}"
                self.end(conn, current, "cancelled", reason, now, sink)
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
            result = self.enroll(
                conn, seq, contact, new_key, now=now, sink=sink, anchor=anchor, event_id=event_id
            )
            return "enrolled" if result.created else result.status
        self._replan(conn, seq, current, new_key, anchor, contact, now, sink, event_id)
        return "rescheduled"

    def _replan(
        self,
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
        planned = self._plan(seq, owner, anchor, now, True)
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
                spec = self._job(enrollment_id, enrollment["contact_id"], p.id, p.due_at)
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
            changes.append(_describe(p))
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
        self.complete_if_done(conn, {**enrollment, "status": "active"}, now, sink)


def _describe(p: PlannedStep) -> dict[str, Any]:
    out: dict[str, Any] = {"step": p.id, "due_at": p.due_at.isoformat()}
    if p.skip is not None:
        out["skipped"] = p.skip
    return out


# -- the processing step ---------------------------------------------------------------------


class SequencesStep:
    """Reacts to each event after the rules step: cancel, reschedule, exit, then enrol."""

    name = "sequences"

    def __init__(self, service: SequenceService) -> None:
        self.service = service

    def apply(self, ctx: ProcessingContext) -> None:
        book = self.service.book
        event_type = ctx.event.type
        enroll_marks = ctx.results.get(ENROLL_MARKERS) or []
        exit_marks = ctx.results.get(EXIT_MARKERS) or []
        relevant = [
            s
            for s in book.enabled
            if event_type in s.spec.enroll_on
            or event_type in s.spec.exit_on
            or event_type in s.spec.cancel_on
            or event_type in s.spec.reschedule_on
        ]
        if not relevant and not enroll_marks and not exit_marks:
            return
        sink = ContextSink(ctx)
        contact = ctx.contact
        scope = Scope(
            {
                "event": event_view(ctx),
                "contact": contact_view(contact) if contact is not None else {},
                "now": ctx.now,
            }
        )
        for seq in relevant:
            if event_type in seq.spec.cancel_on:
                self._guard(ctx, seq, self._cancel, ctx, seq, scope, sink)
            if event_type in seq.spec.reschedule_on:
                self._guard(ctx, seq, self._reschedule, ctx, seq, scope, sink)
        if contact is None:
            return
        for seq in relevant:
            if event_type in seq.spec.exit_on:
                self.service.exit_contact(
                    ctx.conn, contact.id, [seq.id], f"event {event_type}", ctx.now, sink
                )
        for mark in exit_marks:
            target = str(mark.get("sequence"))
            ids = None if target == "all" else [target]
            rule_id = mark.get("rule_id")
            self.service.exit_contact(
                ctx.conn, contact.id, ids, f"rule {rule_id}", ctx.now, sink, rule_id
            )
        for seq in relevant:
            if event_type in seq.spec.enroll_on:
                self._guard(ctx, seq, self._enroll, ctx, seq, scope, sink, None, True)
        for mark in enroll_marks:
            target = str(mark.get("sequence"))
            rule_id = mark.get("rule_id")
            found = book.get(target)
            if found is None:
                ctx.note("sequence.error", {"sequence": target, "error": "not defined"}, rule_id)
                continue
            self._guard(ctx, found, self._enroll, ctx, found, scope, sink, rule_id, False)

    @staticmethod
    def _guard(
        ctx: ProcessingContext, seq: Sequence, action: Callable[..., None], *args: Any
    ) -> None:
        # A key or anchor that cannot be read is the event's data problem, not a crash: it is
        # recorded on the timeline, like a rule condition that errors.
        try:
            action(*args)
        except ExprError as exc:
            ctx.note("sequence.error", {"sequence": seq.id, "error": str(exc)})

    def _enroll(
        self,
        ctx: ProcessingContext,
        seq: Sequence,
        scope: Scope,
        sink: Sink,
        rule_id: str | None,
        check_condition: bool,
    ) -> None:
        assert ctx.contact is not None
        if check_condition and seq.condition is not None and not seq.condition.test(scope):
            return
        key = _key(seq.key, scope, ctx.contact)
        anchor = parse_anchor(seq.anchor.evaluate(scope)) if seq.anchor is not None else None
        self.service.enroll(
            ctx.conn,
            seq,
            ctx.contact,
            key,
            now=ctx.now,
            sink=sink,
            anchor=anchor,
            event_id=ctx.event.id,
            rule_id=rule_id,
        )

    def _cancel(self, ctx: ProcessingContext, seq: Sequence, scope: Scope, sink: Sink) -> None:
        key = _key(seq.key, scope, ctx.contact)
        self.service.cancel(
            ctx.conn,
            seq,
            key,
            reason=f"event {ctx.event.type}",
            now=ctx.now,
            sink=sink,
            event_id=ctx.event.id,
        )

    def _reschedule(self, ctx: ProcessingContext, seq: Sequence, scope: Scope, sink: Sink) -> None:
        assert seq.previous_key is not None and seq.anchor is not None  # validated at load
        new_key = _key(seq.key, scope, ctx.contact)
        old_key = _key(seq.previous_key, scope, ctx.contact)
        anchor = parse_anchor(seq.anchor.evaluate(scope))
        if ctx.contact is not None and seq.condition is not None and not seq.condition.test(scope):
            return
        self.service.reschedule(
            ctx.conn,
            seq,
            old_key,
            new_key,
            anchor,
            contact=ctx.contact,
            now=ctx.now,
            sink=sink,
            event_id=ctx.event.id,
        )


def build_sequences_step(automation_dir: Path | None, time_scale: float = 1.0) -> SequencesStep:
    return SequencesStep(SequenceService(load_book(automation_dir), time_scale=time_scale))


# -- the job ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class _SendJob:
    """What ``Delivery.send_email`` reads from a job: the step's key and a send_email payload."""

    key: str
    payload: dict[str, Any]
    attempt: int


class StepRunner:
    """The ``sequence_step`` handler.

    1. In one transaction: the step is still scheduled, the enrollment live, the contact there
       and not suppressed (marketing steps), the step's ``if:`` true, and the template name
       renders. Otherwise the step is recorded as skipped or cancelled, with the reason.
    2. Send through the delivery service under the job's key (its ``messages`` claim makes it
       exactly-once and applies suppression again at the last moment).
    3. Record the outcome on the step (``sent_at``: the prototype's "Email N Sent"); the
       enrollment completes when no step is left.
    """

    def __init__(
        self,
        service: SequenceService,
        db: Database,
        clock: Clock,
        delivery: Delivery,
        templates: TemplateStore,
        *,
        partitions: int,
    ) -> None:
        self.service = service
        self.db = db
        self.clock = clock
        self.delivery = delivery
        self.templates = templates
        self.partitions = partitions

    async def handle(self, job: JobContext) -> None:
        send = await asyncio.to_thread(self._prepare, job.key, job.payload)
        if send is None:
            return
        try:
            await self.delivery.send_email(_SendJob(job.key, send, job.attempt))
        except Exception as exc:
            await asyncio.to_thread(self._note_error, job.payload, f"{type(exc).__name__}: {exc}")
            raise
        await asyncio.to_thread(self._record, job.key, job.payload, str(send["template"]))

    def _ids(self, payload: Mapping[str, Any]) -> tuple[int, str]:
        try:
            return int(payload["enrollment_id"]), str(payload["step_id"])
        except (KeyError, TypeError, ValueError):
            raise ProviderError(
                f"malformed sequence_step payload {payload!r}", permanent=True
            ) from None

    def _prepare(self, key: str, payload: Mapping[str, Any]) -> dict[str, Any] | None:
        enrollment_id, step_id = self._ids(payload)
        now = self.clock.now()
        with self.db.begin() as conn:
            enrollment = store.get(conn, enrollment_id, lock=True)
            row = store.get_step(conn, enrollment_id, step_id)
            if enrollment is None or row is None or row["status"] != "scheduled":
                return None  # erased, or this step already has its outcome (a replay)
            contact = contact_store.load(conn, enrollment["contact_id"])
            sink = DirectSink(conn, contact, now, self.partitions)
            if enrollment["status"] != "active":
                self._settle(
                    conn,
                    enrollment,
                    step_id,
                    "cancelled",
                    f"enrollment {enrollment['status']}",
                    now,
                    sink,
                )
                return None
            seq = self.service.book.get(enrollment["sequence_id"])
            step = seq.step(step_id) if seq is not None else None
            if seq is None or step is None:
                self._settle(conn, enrollment, step_id, "skipped", "no longer defined", now, sink)
                return None
            if contact is None:
                self._settle(conn, enrollment, step_id, "skipped", "contact erased", now, sink)
                return None
            if not step.spec.transactional:
                blocked = (
                    f"contact status {contact.status}"
                    if contact.suppressed
                    else suppression.check(conn, contact.id, contact.email, transactional=False)
                )
                if blocked is not None:
                    self._settle(
                        conn, enrollment, step_id, "skipped", f"suppressed: {blocked}", now, sink
                    )
                    return None
            event = load_event(conn, enrollment["event_id"])
            view = _enrollment_view(enrollment, contact.time_zone)
            variables = {"contact": contact.view(), "event": event, "enrollment": view, "now": now}
            if step.condition is not None:
                try:
                    passed = step.condition.test(Scope(variables))
                except ExprError as exc:
                    self._settle(
                        conn, enrollment, step_id, "skipped", f"if: error: {exc}", now, sink
                    )
                    return None
                if not passed:
                    self._settle(conn, enrollment, step_id, "skipped", "if: false", now, sink)
                    return None
            template = step.template
            if template is None:
                try:
                    template = self.templates.render_string(
                        step.spec.send_email, variables, where=f"{seq.id}/{step_id} send_email"
                    ).strip()
                    self.templates.folder(template)
                except TemplateError as exc:
                    # Visible and retryable once the data or the template is fixed.
                    raise ProviderError(str(exc), permanent=True) from exc
        return {
            "template": template,
            "contact_id": contact.id,
            "event_id": enrollment["event_id"],
            "rule_id": None,
            "enrollment_id": enrollment_id,
            "step_id": step_id,
            "transactional": step.spec.transactional,
            "vars": {"enrollment": view, "step": {"id": step_id, "template": template}},
        }

    def _settle(
        self,
        conn: Connection,
        enrollment: Mapping[str, Any],
        step_id: str,
        status: str,
        reason: str,
        now: datetime,
        sink: Sink,
        *,
        template: str | None = None,
        sent_at: datetime | None = None,
    ) -> None:
        values: dict[str, Any] = {
            "status": status,
            "reason": reason or None,
            "ran_at": now,
            "updated_at": now,
        }
        if template is not None:
            values["template"] = template
        if sent_at is not None:
            values["sent_at"] = sent_at
        # A send is recorded even if an exit cancelled the step while it was on its way.
        only_if = None if status == "sent" else "scheduled"
        if not store.update_step(conn, enrollment["id"], step_id, values, only_if=only_if):
            return
        detail = {
            "sequence": enrollment["sequence_id"],
            "enrollment_id": enrollment["id"],
            "step": step_id,
            "status": status,
        }
        if template is not None:
            detail["template"] = template
        if reason:
            detail["reason"] = reason
        sink.note("sequence.step", detail)
        fresh = store.get(conn, enrollment["id"])
        if fresh is not None:
            self.service.complete_if_done(conn, fresh, now, sink)

    def _record(self, key: str, payload: Mapping[str, Any], template: str) -> None:
        enrollment_id, step_id = self._ids(payload)
        now = self.clock.now()
        with self.db.begin() as conn:
            enrollment = store.get(conn, enrollment_id, lock=True)
            if enrollment is None:
                return
            contact = contact_store.load(conn, enrollment["contact_id"])
            sink = DirectSink(conn, contact, now, self.partitions)
            message = message_store.get_by_key(conn, key)
            if message is None:
                self._settle(conn, enrollment, step_id, "skipped", "nothing sent", now, sink)
            elif message["status"] == "sent":
                self._settle(
                    conn,
                    enrollment,
                    step_id,
                    "sent",
                    "",
                    now,
                    sink,
                    template=template,
                    sent_at=message["sent_at"] or now,
                )
            elif message["status"] in ("suppressed", "skipped"):
                self._settle(
                    conn,
                    enrollment,
                    step_id,
                    "skipped",
                    str(message["error"] or message["status"]),
                    now,
                    sink,
                    template=template,
                )

    def _note_error(self, payload: Mapping[str, Any], error: str) -> None:
        enrollment_id, step_id = self._ids(payload)
        with self.db.begin() as conn:
            store.update_step(
                conn,
                enrollment_id,
                step_id,
                {"reason": f"attempt failed: {error}"[:2000], "updated_at": self.clock.now()},
            )


def _enrollment_view(row: Mapping[str, Any], time_zone: str | None) -> dict[str, Any]:
    zone = _zone(time_zone) or ZoneInfo("UTC")
    local = row["anchor_at"].astimezone(zone)
    return {
        "id": row["id"],
        "sequence_id": row["sequence_id"],
        "key": row["key"],
        "anchor_at": row["anchor_at"].isoformat(),
        # The meeting time as the contact reads it (templates have no time-zone filter).
        "anchor_local": f"{local:%A} {local.day} {local:%B %Y, %H:%M} ({zone.key})",
        "enrolled_at": row["enrolled_at"].isoformat(),
        "reschedules": row["reschedules"],
    }


def register(registry: HandlerRegistry, container: Container, delivery: Delivery) -> None:
    """The ``sequence_step`` handler, sending through the same delivery service as rules."""
    s = container.settings
    service = SequenceService(load_book(s.automation_dir), time_scale=s.time_scale)
    runner = StepRunner(
        service,
        container.db,
        container.clock,
        delivery,
        delivery.templates,
        partitions=s.partitions,
    )
    registry.register(KIND, runner.handle)


# -- used by the API and the CLI -------------------------------------------------------------


def enroll_contact(
    db: Database,
    service: SequenceService,
    sequence_id: str,
    *,
    now: datetime,
    partitions: int,
    contact_id: int | None = None,
    email: str | None = None,
    key: str | None = None,
    anchor: datetime | None = None,
) -> tuple[Enrolment, dict[str, Any] | None]:
    """A manual enrolment (API): the contact must exist; ``key`` defaults to the contact."""
    seq = service.sequence(sequence_id)
    if seq.key is not None and key is None:
        raise InvalidFields(
            [FieldProblem("key", f"sequence {seq.id!r} is keyed by {seq.spec.key}")]
        )
    if seq.anchor is not None and anchor is None:
        raise InvalidFields([FieldProblem("anchor", f"sequence {seq.id!r} needs an anchor time")])
    with db.begin() as conn:
        contact = None
        if contact_id is not None:
            contact = contact_store.load(conn, contact_id)
        elif email is not None:
            contact = contact_store.load_by_email(conn, email.strip().lower())
        if contact is None:
            raise NotFound("no such contact")
        sink = DirectSink(conn, contact, now, partitions)
        result = service.enroll(
            conn,
            seq,
            contact,
            key or f"contact:{contact.id}",
            now=now,
            sink=sink,
            anchor=anchor,
            rule_id="api",
        )
        row = store.get(conn, result.enrollment_id) if result.enrollment_id is not None else None
    return result, row


def exit_enrollment(
    db: Database,
    service: SequenceService,
    enrollment_id: int,
    reason: str,
    *,
    now: datetime,
    partitions: int,
) -> tuple[bool, dict[str, Any]]:
    with db.begin() as conn:
        row = store.get(conn, enrollment_id, lock=True)
        if row is None:
            raise NotFound(f"no enrollment {enrollment_id}")
        contact = contact_store.load(conn, row["contact_id"])
        ended = service.end(
            conn, row, "exited", reason, now, DirectSink(conn, contact, now, partitions)
        )
        fresh = store.get(conn, enrollment_id)
    assert fresh is not None
    return ended, fresh


def check_automation(directory: Path | None) -> str:
    """``nurture check``: the sequences section, its fixed template names and the sequences
    that rules ``enroll``/``exit`` name; a summary line, or ``ConfigError`` listing problems."""
    from nurture.automation import load_pack
    from nurture.delivery import template_store
    from nurture.rules.book import load_automation
    from nurture.sequences.models import check_rule_targets, check_templates, load_book

    pack = load_pack(directory)
    book = load_book(pack)
    problems = check_templates(book, set(template_store(pack).names()))
    targets = [
        (rule.id, str(action.spec.enroll or action.spec.exit))
        for rule in load_automation(pack).rules
        for action in rule.actions
        if action.kind in ("enroll", "exit")
    ]
    problems += check_rule_targets(book, targets)
    if problems:
        raise ConfigError("; ".join(problems))
    return book.summary()
