"""Running a step: the ``sequence_step`` job handler.

A step's job re-checks everything at run time (the enrollment is live, the contact is there and
not suppressed, the step's ``if:`` holds, its template name renders), sends through the delivery
service under the job's key (so a step is sent at most once) and records the outcome on the
step: the prototype's "Email N Sent".
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from sqlalchemy import Connection

from nurture.clock import Clock
from nurture.contacts import suppression
from nurture.database.engine import Database
from nurture.errors import ProviderError
from nurture.messaging.deliver import load_event
from nurture.messaging.templates import TemplateError, TemplateStore
from nurture.rules.expr import ExprError, Scope
from nurture.sequences.common import KIND, zone
from nurture.sequences.enrollment import SequenceService
from nurture.sequences.models import load as load_book
from nurture.sequences.sinks import DirectSink, Sink
from nurture.storage import contacts as contact_store
from nurture.storage import enrollments as store
from nurture.storage import messages as message_store

if TYPE_CHECKING:
    from nurture.jobs import HandlerRegistry, JobContext
    from nurture.messaging.deliver import Delivery


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
    where = zone(time_zone) or ZoneInfo("UTC")
    local = row["anchor_at"].astimezone(where)
    return {
        "id": row["id"],
        "sequence_id": row["sequence_id"],
        "key": row["key"],
        "anchor_at": row["anchor_at"].isoformat(),
        # The meeting time as the contact reads it (templates have no time-zone filter).
        "anchor_local": f"{local:%A} {local.day} {local:%B %Y, %H:%M} ({where.key})",
        "enrolled_at": row["enrolled_at"].isoformat(),
        "reschedules": row["reschedules"],
    }


def register(
    registry: HandlerRegistry,
    db: Database,
    clock: Clock,
    delivery: Delivery,
    *,
    automation_dir: Path | None,
    time_scale: float,
    partitions: int,
) -> None:
    """The ``sequence_step`` handler, sending through the same delivery service as rules."""
    service = SequenceService(load_book(automation_dir), time_scale=time_scale)
    runner = StepRunner(service, db, clock, delivery, delivery.templates, partitions=partitions)
    registry.register(KIND, runner.handle)
