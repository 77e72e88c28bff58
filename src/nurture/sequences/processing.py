"""The sequences processing step: what an event does to enrollments, inside its transaction.

It runs after the rules step (whose ``enroll``/``exit`` actions leave markers in
``ctx.results``) and, for each event, cancels, reschedules, exits and then enrols, writing
through ``ctx.conn`` only, so a batch redone after a failure does it again from scratch.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from nurture.automation.step import ENROLL_MARKERS, EXIT_MARKERS, contact_view, event_view
from nurture.intake.context import ProcessingContext
from nurture.rules.expr import ExprError, Scope
from nurture.sequences.common import key_for, parse_anchor
from nurture.sequences.enrollment import SequenceService
from nurture.sequences.models import Sequence
from nurture.sequences.models import load as load_book
from nurture.sequences.sinks import ContextSink, Sink


class SequencesStep:
    """Reacts to each event after the rules step: cancel, reschedule, exit, then enrol."""

    name = "sequences"

    def __init__(self, service: SequenceService) -> None:
        self.service = service
        # Most events concern no sequence (and derived ones never do): decide that in one look.
        self.by_type: dict[str, list[Sequence]] = {}
        for s in service.book.enabled:
            spec = s.spec
            for event_type in {
                *spec.enroll_on,
                *spec.exit_on,
                *spec.cancel_on,
                *spec.reschedule_on,
            }:
                self.by_type.setdefault(event_type, []).append(s)

    def apply(self, ctx: ProcessingContext) -> None:
        book = self.service.book
        event_type = ctx.event.type
        enroll_marks = ctx.results.get(ENROLL_MARKERS) or []
        exit_marks = ctx.results.get(EXIT_MARKERS) or []
        relevant = self.by_type.get(event_type, [])
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
        key = key_for(seq.key, scope, ctx.contact)
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
            defer=True,
        )

    def _cancel(self, ctx: ProcessingContext, seq: Sequence, scope: Scope, sink: Sink) -> None:
        key = key_for(seq.key, scope, ctx.contact)
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
        new_key = key_for(seq.key, scope, ctx.contact)
        old_key = key_for(seq.previous_key, scope, ctx.contact)
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
