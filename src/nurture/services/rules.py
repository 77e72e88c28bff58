"""The rules step: segments, ``decide()``, immediate effects, jobs, score and derived events.

For every event with a contact, inside the event's transaction:

1. count the event for the score if it is an engagement event, recompute segmentations
   (rules read them);
2. ``decide()``; condition and expression errors go on the timeline with the rule id;
3. apply immediate decisions (score, tag/untag, set, segment, enroll/exit markers, suppress) and
   enqueue a job for every external or delayed one, keyed ``rule:{event}:{rule}:{action}`` so a
   replayed event never acts twice;
4. recompute segmentations and the lead score, write the score ledger, and queue the derived
   events ``score.crossed``, ``segment.changed`` and ``contact.created``.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import Connection

from nurture import jobs
from nurture.analytics import scoring
from nurture.core.contacts import ContactState
from nurture.rules.book import Automation, load
from nurture.rules.decide import FIRED, Decision, Evaluation, evaluate
from nurture.rules.models import format_duration
from nurture.rules.segments import assign, changes
from nurture.services import suppression
from nurture.services.context import ProcessingContext
from nurture.storage import contacts as contact_store
from nurture.storage import rule_fires
from nurture.storage import scores as score_store

ENROLL_MARKERS = "rules.enroll"
EXIT_MARKERS = "rules.exit"


def event_view(ctx: ProcessingContext) -> dict[str, Any]:
    e = ctx.event
    return {
        "id": e.id,
        "type": e.type,
        "source": e.source,
        "data": e.data,
        "occurred_at": e.occurred_at,
        "depth": e.depth,
    }


def contact_view(contact: ContactState) -> dict[str, Any]:
    view = contact.view()
    view["engagement"] = dict(contact.engagement)
    return view


def job_key(event_id: int, rule_id: str, action_index: int) -> str:
    return f"rule:{event_id}:{rule_id}:{action_index}"


def job_payload(decision: Decision, contact_id: int, event_id: int) -> dict[str, Any]:
    """The payload of SPEC's job kinds (see the jobs contract) for one external decision."""
    spec = decision.spec
    common = {"contact_id": contact_id, "event_id": event_id, "rule_id": decision.rule_id}
    if decision.kind == "send_email":
        return {
            "template": spec.send_email,
            **common,
            "enrollment_id": None,
            "step_id": None,
            "transactional": spec.transactional,
            "vars": dict(spec.vars),
        }
    if decision.kind == "send_sms":
        return {"template": spec.send_sms, "text": spec.text, **common, "vars": dict(spec.vars)}
    if decision.kind == "webhook":
        return {"endpoint": spec.webhook, **common, "body": spec.body, "vars": dict(spec.vars)}
    if decision.kind == "task":
        return {"title": spec.task, "kind": spec.kind, **common, "priority": spec.priority}
    raise ValueError(f"{decision.kind} is not an external action")


class RulesStep:
    name = "rules"

    def __init__(self, automation: Automation, *, time_scale: float = 1.0) -> None:
        self.automation = automation
        self.time_scale = time_scale

    # -- the step ---------------------------------------------------------------------------

    def apply(self, ctx: ProcessingContext) -> None:
        contact = ctx.contact
        if contact is None:
            return  # rules act on contacts; an event without one only lands in the inbox
        spec = self.automation.scoring
        score_before = contact.score
        segments_before = dict(contact.segments)
        if ctx.event.source != "derived" and any(
            n["kind"] == "contact.created" for n in ctx.timeline
        ):
            ctx.derive("contact.created", {"source": ctx.event.source})

        engagement = dict(contact.engagement)
        if ctx.event.type in spec.engagement_events:
            engagement["events"] = int(engagement.get("events", 0)) + 1
        self._segments(ctx, contact)

        evaluation = self._evaluate(ctx, contact, engagement)
        ledger = self._apply(ctx, contact, evaluation, engagement)

        if any(d.immediate and d.kind != "score" for d in evaluation.decisions):
            self._segments(ctx, contact)  # a tag, attribute or status may move a segment
        self._score(ctx, contact, engagement, ledger, score_before)
        for change in changes(segments_before, contact.segments):
            ctx.note("segment.changed", change)
            ctx.derive("segment.changed", change)

    # -- pieces -----------------------------------------------------------------------------

    def _segments(self, ctx: ProcessingContext, contact: ContactState) -> None:
        if not self.automation.segmentations:
            return
        result = assign(self.automation.segmentations, contact.view(), ctx.now)
        for err in result.errors:
            ctx.note(
                "segment.error",
                {"segmentation": err.segmentation, "value": err.value, "error": err.message},
            )
        for name, value in result.values.items():
            if value is None:
                if name in contact.segments:
                    del contact.segments[name]
                    contact.dirty = True
            elif contact.segments.get(name) != value:
                contact.segments[name] = value
                contact.dirty = True

    def _evaluate(
        self, ctx: ProcessingContext, contact: ContactState, engagement: dict[str, Any]
    ) -> Evaluation:
        candidates = self.automation.candidates(ctx.event.type, ctx.event.data)
        once = [r.id for r in candidates if r.spec.once is not None]
        history = rule_fires.last_fired(ctx.conn, contact.id, once) if once else {}
        view = contact.view()
        view["engagement"] = engagement
        evaluation = evaluate(self.automation, event_view(ctx), view, ctx.now, history)
        for err in evaluation.errors:
            ctx.note("rule.error", {"where": err.where, "error": err.message}, rule_id=err.rule_id)
        fired_once = [
            o.rule_id for o in evaluation.outcomes if o.status == FIRED and o.rule_id in once
        ]
        rule_fires.record(ctx.conn, contact.id, fired_once, ctx.now)
        return evaluation

    def _apply(
        self,
        ctx: ProcessingContext,
        contact: ContactState,
        evaluation: Evaluation,
        engagement: dict[str, Any],
    ) -> list[dict[str, Any]]:
        """Apply immediate decisions, enqueue the rest; return the ledger rows of score deltas."""
        ledger: list[dict[str, Any]] = []
        scored: set[tuple[str, int]] = set()
        if any(d.kind == "score" for d in evaluation.decisions):
            # Only an event at or below the newest one that scored can be a replay; the ledger
            # is asked only then (arrival order makes that rare).
            if ctx.event.id <= int(engagement.get("last_event_id", 0)):
                scored = score_store.applied(ctx.conn, ctx.event.id)
            engagement["last_event_id"] = max(ctx.event.id, int(engagement.get("last_event_id", 0)))
        done: dict[str, list[dict[str, Any]]] = {}
        jobs_due: list[jobs.JobSpec] = []
        for decision in evaluation.decisions:
            detail = decision.describe()
            if decision.kind == "score":
                if (decision.rule_id, decision.action_index) in scored:
                    detail["skipped"] = "already scored for this event (replay)"
                else:
                    self._add_engagement(engagement, int(decision.spec.score or 0), ctx.now)
                    ledger.append(self._ledger_row(ctx, contact, decision))
            elif decision.immediate:
                detail["changed"] = self._immediate(ctx, contact, decision)
            else:
                spec = self._job(ctx, contact, decision)
                jobs_due.append(spec)
                detail.update(job_key=spec.key, run_at=spec.run_at.isoformat())
            done.setdefault(decision.rule_id, []).append(detail)
        # One statement for all of the event's jobs; a key that exists (replay) is skipped.
        jobs.enqueue_many(ctx.conn, jobs_due, now=ctx.now)
        for rule_id in evaluation.fired:
            ctx.note("rule.fired", {"actions": done.get(rule_id, [])}, rule_id=rule_id)
        return ledger

    def _immediate(self, ctx: ProcessingContext, contact: ContactState, d: Decision) -> bool:
        spec = d.spec
        if d.kind == "tag":
            return contact.add_tag(str(spec.tag))
        if d.kind == "untag":
            return contact.remove_tag(str(spec.untag))
        if d.kind == "set":
            name = str(spec.set)
            if contact.attributes.get(name) == d.value:
                return False
            contact.attributes[name] = d.value
            contact.dirty = True
            return True
        if d.kind == "segment":
            name = str(spec.segment)
            if contact.segments.get(name) == d.value:
                return False
            contact.segments[name] = str(d.value)
            contact.dirty = True
            return True
        if d.kind in ("enroll", "exit"):
            # Markers for the sequences step, which runs after this one in the same transaction.
            key = ENROLL_MARKERS if d.kind == "enroll" else EXIT_MARKERS
            target = spec.enroll if d.kind == "enroll" else spec.exit
            ctx.results.setdefault(key, []).append({"sequence": target, "rule_id": d.rule_id})
            return True
        if d.kind == "suppress":
            reason = spec.suppress if isinstance(spec.suppress, str) else "manual"
            added = suppression.suppress(ctx.conn, contact, reason, ctx.now, event_id=ctx.event.id)
            status = reason if reason in ("complained", "bounced") else "unsubscribed"
            return contact.degrade_status(status) or added
        raise ValueError(f"unknown immediate action {d.kind}")

    def _job(self, ctx: ProcessingContext, contact: ContactState, d: Decision) -> jobs.JobSpec:
        return jobs.JobSpec(
            kind=d.kind,
            key=job_key(ctx.event.id, d.rule_id, d.action_index),
            run_at=jobs.due_at(ctx.now, d.delay or timedelta(0), self.time_scale),
            payload=job_payload(d, contact.id, ctx.event.id),
            contact_id=contact.id,
        )

    def _add_engagement(self, engagement: dict[str, Any], delta: int, now: datetime) -> None:
        engagement["sum"] = engagement.get("sum", 0) + delta
        spec = self.automation.scoring
        if spec.half_life is not None:
            since = scoring.parse_time(engagement.get("decayed_at"))
            current = scoring.decayed(float(engagement.get("decayed", 0.0)), since, now, spec)
            engagement["decayed"] = current + delta
            engagement["decayed_at"] = now.isoformat()

    @staticmethod
    def _ledger_row(ctx: ProcessingContext, contact: ContactState, d: Decision) -> dict[str, Any]:
        return {
            "contact_id": contact.id,
            "event_id": ctx.event.id,
            "rule_id": d.rule_id,
            "action_index": d.action_index,
            "component": "rule",
            "delta": int(d.spec.score or 0),
            "reason": d.spec.reason,
            "at": ctx.now,
        }

    def _score(
        self,
        ctx: ProcessingContext,
        contact: ContactState,
        engagement: dict[str, Any],
        ledger: list[dict[str, Any]],
        score_before: int,
    ) -> None:
        spec = self.automation.scoring
        breakdown = scoring.compute(
            spec, scoring.inputs_for(spec, contact.rfm, engagement, ctx.now)
        )
        previous_profile = int(engagement.get("profile", spec.base))
        if breakdown.profile != previous_profile:
            ledger.append(
                {
                    "contact_id": contact.id,
                    "event_id": ctx.event.id,
                    "rule_id": None,
                    "action_index": None,
                    "component": "profile",
                    "delta": breakdown.profile - previous_profile,
                    "reason": "profile: rfm, engagement events, purchases, recency",
                    "at": ctx.now,
                }
            )
            engagement["profile"] = breakdown.profile
        for row in ledger:
            row["score_before"] = score_before
            row["score_after"] = breakdown.total
        score_store.append(ctx.conn, ledger)
        if engagement != contact.engagement:
            contact.engagement = engagement
            contact.dirty = True
        if breakdown.total == score_before:
            return
        contact.score = breakdown.total
        contact.dirty = True
        ctx.note(
            "score.changed",
            {"from": score_before, "to": breakdown.total, "breakdown": breakdown.as_dict()},
        )
        for threshold, direction in scoring.crossings(
            score_before, breakdown.total, spec.thresholds
        ):
            data = {
                "threshold": threshold,
                "direction": direction,
                "from": score_before,
                "to": breakdown.total,
            }
            ctx.note("score.crossed", data)
            ctx.derive("score.crossed", data)


def build_rules_step(automation_dir: Path | None, time_scale: float = 1.0) -> RulesStep:
    """Load and compile the automation folder (a ``ConfigError`` names file:line: field)."""
    return RulesStep(load(automation_dir), time_scale=time_scale)


def explain(
    conn: Connection, contact_id: int, automation: Automation, now: datetime, *, limit: int = 200
) -> dict[str, Any] | None:
    """Every component of a contact's lead score at ``now`` and the rule deltas behind it."""
    contact = contact_store.load(conn, contact_id)
    if contact is None:
        return None
    spec = automation.scoring
    inputs = scoring.inputs_for(spec, contact.rfm, contact.engagement, now)
    breakdown = scoring.compute(spec, inputs)
    rows = score_store.for_contact(conn, contact_id, limit=limit)
    return {
        "contact_id": contact.id,
        "email": contact.email,
        "total": breakdown.total,
        "stored": contact.score,
        "components": breakdown.as_dict(),
        "inputs": {
            "rfm_score": inputs.rfm_score,
            "engagement_events": inputs.engagement_events,
            "purchases": inputs.purchases,
            "days_since_purchase": inputs.days_since_purchase,
            "engagement": inputs.engagement,
        },
        "engagement": {
            "sum": contact.engagement.get("sum", 0),
            "events": contact.engagement.get("events", 0),
            "half_life": (format_duration(spec.half_life) if spec.half_life is not None else None),
        },
        "rules": [
            {
                "rule_id": r["rule_id"],
                "event_id": r["event_id"],
                "action_index": r["action_index"],
                "delta": r["delta"],
                "reason": r["reason"],
                "at": r["at"].isoformat(),
            }
            for r in rows
            if r["component"] == "rule"
        ],
        "profile_changes": [
            {"event_id": r["event_id"], "delta": r["delta"], "at": r["at"].isoformat()}
            for r in rows
            if r["component"] == "profile"
        ],
        "ledger_limit": limit,
    }
