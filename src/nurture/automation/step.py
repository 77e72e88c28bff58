"""The rules step: segments, ``decide()``, immediate effects, jobs, score and derived events.

For every event with a contact, inside the event's transaction:

1. count the event for the score if it is an engagement event, recompute segmentations
   (rules read them);
2. ``decide()``; condition and expression errors go on the timeline with the rule id;
3. apply immediate decisions (score, tag/untag, set, segment, enroll/exit markers, suppress) and
   enqueue a job for every external or delayed one, keyed ``rule:{event}:{rule}:{action}``;
4. recompute segmentations and the lead score, write the score ledger, and queue the derived
   events ``score.crossed``, ``segment.changed`` and ``contact.created``.

Score-ledger rows and jobs are written once per batch (``finish_batch``), in the same
transaction: one statement per event cost more than the rest of the step.

A replayed event never acts twice. Its rules' effects were committed with the timeline notes
that explain them (``rule.fired``), so a rule that acted on the event before is skipped, the
event is not counted for the score again, and a score row is never written twice for one
(event, rule, action); only an event at or below the contact's newest processed event can be a
replay, so the timeline is asked only then.

A delayed immediate action (``score: 5`` with ``after: 2h``) becomes a ``rule_action`` job.
When it comes due, its handler queues a ``rule.delayed`` event for the contact, and this step
applies the action for that event exactly like an immediate one: in the processor's
transaction for the contact's partition (so never racing the contact's other events), with
its ledger row keyed by the original (event, rule, action), the timeline note ``rule.applied``
and the derived events its change causes.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

import orjson
from sqlalchemy import Connection

from nurture import jobs
from nurture.analytics import scoring
from nurture.contacts import refresh as contact_refresh
from nurture.contacts import suppression
from nurture.core.contacts import ContactState
from nurture.core.durations import format_duration
from nurture.core.events import ContactRef, content_hash
from nurture.database.engine import Database
from nurture.intake.context import ProcessingContext
from nurture.rules.book import Automation, load
from nurture.rules.decide import FIRED, Decision, Evaluation, evaluate
from nurture.rules.models import ActionSpec
from nurture.rules.segments import Assignment, assign, changes, contact_fields
from nurture.storage import contacts as contact_store
from nurture.storage import events as event_store
from nurture.storage import rule_fires
from nurture.storage import scores as score_store

log = logging.getLogger("nurture.rules")

ENROLL_MARKERS = "rules.enroll"
EXIT_MARKERS = "rules.exit"
# A delayed immediate action: the job that waits, and the event its handler queues.
ACTION_JOB = "rule_action"
DELAYED = "rule.delayed"
# Events the engine makes itself (never a provider's): only these may carry a delayed action.
DERIVED_SOURCE = "derived"
# Rows an event's processing leaves in ``ctx.results`` for ``RulesStep.finish_batch``.
BATCH_LEDGER = "rules.ledger"
BATCH_JOBS = "rules.jobs"
# Contacts whose last segmentation result is remembered (see ``RulesStep.__init__``).
SEGMENT_MEMO_SIZE = 50_000


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


def contact_ref(contact: ContactState) -> dict[str, Any]:
    """How an event queued for ``contact`` names it (as the processor's derived events do)."""
    if contact.email:
        return {"email": contact.email}
    return ContactRef(identities=dict(contact.identities)).to_json()


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


def delayed_payload(ctx: ProcessingContext, contact: ContactState, d: Decision) -> dict[str, Any]:
    """A ``rule_action`` job: the decision as taken now (its evaluated value included), so a
    later change of the rules does not change what was decided."""
    return {
        "contact_id": contact.id,
        "event_id": ctx.event.id,
        "rule_id": d.rule_id,
        "action_index": d.action_index,
        "action": d.spec.export(),
        "value": d.value,
        "partition": ctx.event.partition,
        "depth": ctx.event.depth,
    }


def delayed_decision(data: Mapping[str, Any]) -> Decision:
    """The decision a ``rule.delayed`` event carries, to be applied now (its ``after`` spent)."""
    spec = ActionSpec.model_validate({**data["action"], "after": None})
    return Decision(
        str(data["rule_id"]), int(data["action_index"]), spec.action, spec, data.get("value")
    )


class Prior:
    """What an earlier processing of this event left (a replay): whether it was processed,
    the rules that acted on it, and the (rule, action) score rows it wrote."""

    __slots__ = ("rules", "scored", "seen")

    def __init__(self, seen: bool, rules: set[str], scored: set[tuple[str, int]]) -> None:
        self.seen = seen
        self.rules = rules
        self.scored = scored


class RulesStep:
    name = "rules"

    def __init__(self, automation: Automation, *, time_scale: float = 1.0) -> None:
        self.time_scale = time_scale
        self.automation = automation

    @property
    def automation(self) -> Automation:
        return self._automation

    @automation.setter
    def automation(self, automation: Automation) -> None:
        # Replaceable at start (``outbound.silence_switched_off`` prunes actions).
        self._automation = automation
        # Segmentations are a pure function of the contact fields they read (and ``now`` if
        # they read it), and those rarely change between a contact's events: the last result
        # per contact is kept with a fingerprint of those fields, so CEL runs only on a change.
        segs = automation.segmentations
        fields: set[str] | None = set()
        for seg in segs:
            read = contact_fields(seg)
            fields = None if read is None or fields is None else fields | read
        self._segment_fields: tuple[str, ...] | None = (
            None if fields is None else tuple(sorted(fields))
        )
        self._segments_read_now = any(
            "now" in e.names
            for s in segs
            for e in (s.condition, *(v.condition for v in s.values))
            if e is not None
        )
        self._segment_memo: dict[int, tuple[bytes, Assignment]] = {}

    # -- the step ---------------------------------------------------------------------------

    def apply(self, ctx: ProcessingContext) -> None:
        contact = ctx.contact
        if contact is None:
            return  # rules act on contacts; an event without one only lands in the inbox
        if ctx.event.type == DELAYED and ctx.event.source == DERIVED_SOURCE:
            self._apply_delayed(ctx, contact)
            return
        spec = self.automation.scoring
        score_before = contact.score
        segments_before = dict(contact.segments)
        if ctx.event.source != DERIVED_SOURCE and any(
            n["kind"] == "contact.created" for n in ctx.timeline
        ):
            ctx.derive("contact.created", {"source": ctx.event.source})

        engagement = dict(contact.engagement)
        prior = self._prior(ctx, contact, engagement)
        if ctx.event.type in spec.engagement_events and (prior is None or not prior.seen):
            engagement["events"] = int(engagement.get("events", 0)) + 1
        self._segments(ctx, contact)

        evaluation = self._evaluate(ctx, contact, engagement, prior)
        ledger = self._apply(ctx, contact, evaluation, engagement, prior)

        changed = any(d.immediate and d.kind != "score" for d in evaluation.decisions)
        self._finish(ctx, contact, engagement, ledger, score_before, segments_before, changed)

    def finish_batch(
        self, conn: Connection, contexts: Sequence[ProcessingContext], now: datetime
    ) -> None:
        """Write the batch's score-ledger rows and jobs, one statement each (the processor calls
        this in the batch's transaction, with the contexts of the events that succeeded).

        Nothing in the batch reads them back: a replay, and a delayed action's check of its
        original event's score row, always come in a later batch.
        """
        ledger: list[dict[str, Any]] = []
        due: list[jobs.JobSpec] = []
        for ctx in contexts:
            ledger.extend(ctx.results.get(BATCH_LEDGER, ()))
            due.extend(ctx.results.get(BATCH_JOBS, ()))
        score_store.append(conn, ledger)
        # A key that exists is skipped.
        jobs.enqueue_many(conn, due, now=now)

    # -- pieces -----------------------------------------------------------------------------

    def _prior(
        self, ctx: ProcessingContext, contact: ContactState, engagement: dict[str, Any]
    ) -> Prior | None:
        """``None`` unless this event may have been processed before (a replay).

        ``last_event_id`` is the newest event this step handled for the contact: an event
        above it is new, so the timeline is asked only for the rare event at or below it (a
        replay, or an event retried after later ones).
        """
        last = int(engagement.get("last_event_id", 0))
        event_id = ctx.event.id
        if event_id > last:
            engagement["last_event_id"] = event_id
            return None
        seen, rules = rule_fires.event_history(ctx.conn, contact.id, event_id)
        return Prior(seen, rules, score_store.applied(ctx.conn, event_id))

    def _assign(self, contact: ContactState, now: datetime) -> Assignment:
        view = contact.view()
        if self._segment_fields is None:
            return assign(self.automation.segmentations, view, now)
        probe = {name: view.get(name) for name in self._segment_fields}
        if self._segments_read_now:
            probe["__now__"] = now
        fingerprint = orjson.dumps(probe, option=orjson.OPT_SORT_KEYS, default=str)
        memo = self._segment_memo.get(contact.id)
        if memo is not None and memo[0] == fingerprint:
            return memo[1]
        result = assign(self.automation.segmentations, view, now)
        if len(self._segment_memo) >= SEGMENT_MEMO_SIZE:
            self._segment_memo.clear()
        self._segment_memo[contact.id] = (fingerprint, result)
        return result

    def _segments(self, ctx: ProcessingContext, contact: ContactState) -> None:
        if not self.automation.segmentations:
            return
        result = self._assign(contact, ctx.now)
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
        self,
        ctx: ProcessingContext,
        contact: ContactState,
        engagement: dict[str, Any],
        prior: Prior | None,
    ) -> Evaluation:
        candidates = self.automation.candidates(ctx.event.type, ctx.event.data)
        once = [r.id for r in candidates if r.spec.once is not None]
        history = rule_fires.last_fired(ctx.conn, contact.id, once) if once else {}
        view = contact.view()
        view["engagement"] = engagement
        evaluation = evaluate(self.automation, event_view(ctx), view, ctx.now, history)
        for err in evaluation.errors:
            ctx.note("rule.error", {"where": err.where, "error": err.message}, rule_id=err.rule_id)
        if once:
            # A rule skipped as a replay did not fire again: its once-limit keeps its time.
            done = prior.rules if prior is not None else set()
            fired_once = [
                o.rule_id
                for o in evaluation.outcomes
                if o.status == FIRED and o.rule_id in once and o.rule_id not in done
            ]
            rule_fires.record(ctx.conn, contact.id, fired_once, ctx.now)
        return evaluation

    def _apply(
        self,
        ctx: ProcessingContext,
        contact: ContactState,
        evaluation: Evaluation,
        engagement: dict[str, Any],
        prior: Prior | None,
    ) -> list[dict[str, Any]]:
        """Apply immediate decisions, enqueue the rest; return the ledger rows of score deltas."""
        ledger: list[dict[str, Any]] = []
        done: dict[str, list[dict[str, Any]]] = {}
        replayed: set[str] = set()
        jobs_due: list[jobs.JobSpec] = []
        for decision in evaluation.decisions:
            detail = decision.describe()
            if prior is not None and (
                decision.rule_id in prior.rules
                or (decision.rule_id, decision.action_index) in prior.scored
            ):
                # Acted on this event before (a replay): effects, ledger rows and jobs exist.
                replayed.add(decision.rule_id)
                done.setdefault(decision.rule_id, []).append(detail)
                continue
            if not decision.immediate:
                spec = self._job(ctx, contact, decision)
                jobs_due.append(spec)
                detail.update(job_key=spec.key, run_at=spec.run_at.isoformat())
            elif decision.kind == "score":
                self._add_engagement(engagement, int(decision.spec.score or 0), ctx.now)
                ledger.append(self._ledger_row(ctx, contact, decision, ctx.event.id))
            else:
                detail["changed"] = self._immediate(ctx, contact, decision)
            done.setdefault(decision.rule_id, []).append(detail)
        if jobs_due:
            ctx.results.setdefault(BATCH_JOBS, []).extend(jobs_due)
        for rule_id in evaluation.fired:
            if rule_id in replayed:
                ctx.note(
                    "rule.skipped",
                    {
                        "reason": "already acted on this event (replay)",
                        "actions": done.get(rule_id, []),
                    },
                    rule_id=rule_id,
                )
            else:
                ctx.note("rule.fired", {"actions": done.get(rule_id, [])}, rule_id=rule_id)
        return ledger

    def _apply_delayed(self, ctx: ProcessingContext, contact: ContactState) -> None:
        """A ``rule.delayed`` event: apply the one action it carries, as ``_apply`` would have."""
        score_before = contact.score
        segments_before = dict(contact.segments)
        engagement = dict(contact.engagement)
        data = ctx.event.data
        decision = delayed_decision(data)
        origin = int(data["event_id"])
        prior = self._prior(ctx, contact, engagement)
        detail: dict[str, Any] = {"event_id": origin, **decision.describe()}
        ledger: list[dict[str, Any]] = []
        applied = True
        if prior is not None and decision.rule_id in prior.rules:
            applied = False  # this rule.delayed event was replayed
        elif decision.kind == "score":
            # Keyed by the original event, like an immediate score: applied once, ever.
            if (decision.rule_id, decision.action_index) in score_store.applied(ctx.conn, origin):
                applied = False
            else:
                self._add_engagement(engagement, int(decision.spec.score or 0), ctx.now)
                ledger.append(self._ledger_row(ctx, contact, decision, origin))
        else:
            detail["changed"] = self._immediate(ctx, contact, decision)
        if applied:
            ctx.note("rule.applied", detail, rule_id=decision.rule_id)
        else:
            detail["reason"] = "already applied (replay)"
            ctx.note("rule.skipped", detail, rule_id=decision.rule_id)
        changed = applied and decision.kind != "score"
        self._finish(ctx, contact, engagement, ledger, score_before, segments_before, changed)

    def _finish(
        self,
        ctx: ProcessingContext,
        contact: ContactState,
        engagement: dict[str, Any],
        ledger: list[dict[str, Any]],
        score_before: int,
        segments_before: dict[str, str],
        resegment: bool,
    ) -> None:
        if resegment:
            self._segments(ctx, contact)  # a tag, attribute or status may move a segment
        self._score(ctx, contact, engagement, ledger, score_before)
        for change in changes(segments_before, contact.segments):
            ctx.note("segment.changed", change)
            ctx.derive("segment.changed", change)

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
        if d.deferred:
            kind, payload = ACTION_JOB, delayed_payload(ctx, contact, d)
        else:
            kind, payload = d.kind, job_payload(d, contact.id, ctx.event.id)
        return jobs.JobSpec(
            kind=kind,
            key=job_key(ctx.event.id, d.rule_id, d.action_index),
            run_at=jobs.due_at(ctx.now, d.delay or timedelta(0), self.time_scale),
            payload=payload,
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
    def _ledger_row(
        ctx: ProcessingContext, contact: ContactState, d: Decision, event_id: int
    ) -> dict[str, Any]:
        return {
            "contact_id": contact.id,
            "event_id": event_id,
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
        if ledger:
            ctx.results.setdefault(BATCH_LEDGER, []).extend(ledger)
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


# -- the rule_action job: a delayed action comes due --------------------------------------------


def queue_delayed(db: Database, ctx: jobs.JobContext) -> None:
    """Queue the ``rule.delayed`` event that applies the action (see the module docstring).

    Its dedupe key is the job key, so a job that runs twice (lease lost) queues one event. A
    contact erased meanwhile gets nothing (erasure also deletes its pending jobs).
    """
    payload = ctx.payload
    now = ctx.now
    with db.begin() as conn:
        contact = contact_store.load(conn, int(payload["contact_id"]))
        if contact is None:
            return
        origin = int(payload["event_id"])
        data = {
            "rule_id": payload["rule_id"],
            "action_index": payload["action_index"],
            "event_id": origin,
            "job_key": ctx.key,
            "action": payload["action"],
            "value": payload.get("value"),
        }
        event_store.insert_new(
            conn,
            [
                {
                    "source": DERIVED_SOURCE,
                    "type": DELAYED,
                    "dedupe_key": "derived:" + content_hash(DELAYED, ctx.key),
                    "partition": int(payload.get("partition") or 0),
                    "status": "pending",
                    "available_at": now,
                    "contact_key": None,
                    "contact_id": contact.id,
                    "raw": None,
                    "content_type": None,
                    "canonical": {
                        "type": DELAYED,
                        "occurred_at": now.isoformat(),
                        "contact": contact_ref(contact),
                        "data": data,
                    },
                    "received_at": now,
                    "occurred_at": now,
                    "depth": int(payload.get("depth") or 0) + 1,
                    "parent_id": origin,
                }
            ],
        )
    log.info(
        "delayed rule action due",
        extra={"action": "rules.delayed", "rule_id": payload["rule_id"], "event_id": origin},
    )


def register(registry: jobs.HandlerRegistry, db: Database, automation_dir: Path | None) -> None:
    """The rules feature's jobs: delayed actions, and the refresh of segments and scores after
    a bulk change (``contacts.refresh``)."""
    registry.register(ACTION_JOB, partial(queue_delayed, db))
    contact_refresh.register(registry, db, automation_dir)


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
