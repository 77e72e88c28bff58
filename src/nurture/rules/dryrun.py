"""The dry run: which rules fire for an event and why, and what they would do. Changes nothing.

Used by ``nurture rules test`` and ``POST /api/v1/rules/dry-run``. Pure: the caller supplies the
contact (from JSON, or loaded from the database) and ``now``.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

import orjson

from nurture.analytics import scoring
from nurture.core.contacts import ContactState
from nurture.errors import FieldProblem, InvalidFields
from nurture.rules.book import Automation
from nurture.rules.decide import evaluate
from nurture.rules.segments import assign

CONTACT_FIELDS = (
    "id",
    "email",
    "first_name",
    "last_name",
    "phone",
    "time_zone",
    "attributes",
    "tags",
    "segments",
    "status",
    "score",
    "engagement",
    "rfm",
)


def contact_from_json(data: Mapping[str, Any] | None) -> ContactState:
    """A contact as a dry run sees it; missing fields take a new contact's defaults."""
    data = dict(data or {})
    unknown = sorted(set(data) - set(CONTACT_FIELDS) - {"identities"})
    if unknown:
        raise InvalidFields([FieldProblem(f"contact.{k}", "unknown field") for k in unknown])
    state = ContactState(id=int(data.get("id") or 0), email=data.get("email"))
    for name in CONTACT_FIELDS[2:]:
        if data.get(name) is not None:
            setattr(state, name, data[name])
    state.identities = dict(data.get("identities") or {})
    return state


def event_from_json(data: Mapping[str, Any], now: datetime) -> dict[str, Any]:
    problems = []
    type_ = data.get("type")
    if not isinstance(type_, str) or not type_:
        problems.append(FieldProblem("event.type", "required, e.g. email.clicked"))
    payload = data.get("data", {})
    if not isinstance(payload, dict):
        problems.append(FieldProblem("event.data", "must be an object"))
    occurred = data.get("occurred_at")
    when = scoring.parse_time(occurred) if occurred is not None else now
    if when is None:
        problems.append(FieldProblem("event.occurred_at", "must be ISO 8601 with a UTC offset"))
    if problems:
        raise InvalidFields(problems)
    return {
        "id": data.get("id", 0),
        "type": type_,
        "source": data.get("source", "dry-run"),
        "data": payload,
        "occurred_at": when,
        "depth": 0,
    }


def dry_run(
    automation: Automation,
    event: Mapping[str, Any],
    contact: ContactState,
    now: datetime,
    history: Mapping[str, datetime] | None = None,
) -> dict[str, Any]:
    contact = contact.snapshot()
    segments = assign(automation.segmentations, contact.view(), now)
    for name, value in segments.values.items():
        if value is None:
            contact.segments.pop(name, None)
        else:
            contact.segments[name] = value
    view = contact.view()
    view["engagement"] = dict(contact.engagement)
    evaluation = evaluate(automation, event, view, now, history, explain=True)
    spec = automation.scoring
    engagement = dict(contact.engagement)
    if event.get("type") in spec.engagement_events:
        engagement["events"] = int(engagement.get("events", 0)) + 1
    # Delayed scores (``after:``) are not part of the score this event leaves.
    delta = sum(
        int(d.spec.score or 0) for d in evaluation.decisions if d.kind == "score" and d.immediate
    )
    engagement["sum"] = engagement.get("sum", 0) + delta
    if "decayed" in engagement:
        engagement["decayed"] = float(engagement["decayed"]) + delta
    before = scoring.compute(spec, scoring.inputs_for(spec, contact.rfm, contact.engagement, now))
    after = scoring.compute(spec, scoring.inputs_for(spec, contact.rfm, engagement, now))
    return {
        "event": {k: v for k, v in event.items() if k != "occurred_at"}
        | {"occurred_at": event["occurred_at"].isoformat()},
        "segments": dict(contact.segments),
        "rules": [
            {"rule_id": o.rule_id, "status": o.status, "detail": o.detail}
            for o in evaluation.outcomes
        ],
        "decisions": [d.describe() for d in evaluation.decisions],
        "errors": [
            {"rule_id": e.rule_id, "where": e.where, "error": e.message} for e in evaluation.errors
        ],
        "segment_errors": [
            {"segmentation": e.segmentation, "value": e.value, "error": e.message}
            for e in segments.errors
        ],
        "score": {
            "before": before.total,
            "after": after.total,
            "crossings": [
                {"threshold": t, "direction": d}
                for t, d in scoring.crossings(before.total, after.total, spec.thresholds)
            ],
        },
    }


def event_from_text(text: str, now: datetime, *, limit: int = 20_000) -> dict[str, Any]:
    """``event_from_json`` of pasted JSON (the console's form); every problem is reported
    against the one field ``event``."""
    problem = None
    parsed: Any = None
    if len(text) > limit:
        problem = f"at most {limit} characters"
    else:
        try:
            parsed = orjson.loads(text)
        except orjson.JSONDecodeError as exc:
            problem = f"not JSON: {exc}"
    if problem is None and not isinstance(parsed, dict):
        problem = 'a JSON object, e.g. {"type": "email.clicked"}'
    if problem is not None:
        raise InvalidFields([FieldProblem("event", problem)])
    try:
        return event_from_json(parsed, now)
    except InvalidFields as exc:
        message = "; ".join(f"{p.field}: {p.message}" for p in exc.problems)
        raise InvalidFields([FieldProblem("event", message)]) from None
