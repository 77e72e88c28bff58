"""The default pack's rules, table-driven: each fires or does not, with the prototype's broken
cases pinned (amount 30 fires nothing, no value segment gets no open points, ...)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from nurture.pack import DEFAULTS_DIR
from nurture.rules.book import Automation, load
from nurture.rules.decide import CONDITION_ERROR, CONDITION_FALSE, FIRED, evaluate
from nurture.rules.segments import assign

NOW = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def pack() -> Automation:
    return load(DEFAULTS_DIR)


def contact(**over: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "id": 1,
        "email": "ann@example.com",
        "attributes": {},
        "tags": [],
        "segments": {},
        "status": "subscribed",
        "score": 50,
        "rfm": {},
        "identities": {},
    }
    base.update(over)
    return base


def event(type_: str, **data: Any) -> dict[str, Any]:
    return {"id": 7, "type": type_, "source": "track", "data": data, "occurred_at": NOW}


VIP = {"value": "VIP"}
STANDARD = {"value": "Standard"}
AT_RISK = {"value": "At Risk"}
CHURN = {"value": "Churn"}

CASES: list[tuple[str, dict[str, Any], dict[str, Any], str, list[tuple[str, Any]]]] = [
    # (rule, event, contact, expected status, expected (action, value) pairs)
    ("email-opened", event("email.opened"), contact(segments=VIP), FIRED, [("score", 5)]),
    ("email-opened", event("email.opened"), contact(segments=STANDARD), FIRED, [("score", 5)]),
    ("email-opened", event("email.opened"), contact(segments=AT_RISK), CONDITION_FALSE, []),
    ("email-opened", event("email.opened"), contact(segments=CHURN), CONDITION_FALSE, []),
    # The prototype let a missing segment through; here no value segment means no points.
    ("email-opened", event("email.opened"), contact(), CONDITION_FALSE, []),
    (
        "email-clicked",
        event("email.clicked", link="https://x"),
        contact(segments=VIP),
        FIRED,
        [("score", 15), ("tag", "engaged")],
    ),
    ("email-clicked", event("email.clicked"), contact(), CONDITION_FALSE, []),
    ("email-clicked", event("email.clicked"), contact(segments=AT_RISK), CONDITION_FALSE, []),
    (
        "email-bounced",
        event("email.bounced", kind="hard"),
        contact(),
        FIRED,
        [("score", -20), ("tag", "invalid_email")],
    ),
    (
        "purchase",
        event("purchase.completed", amount=60),
        contact(),
        FIRED,
        [("score", 50), ("send_email", "thank_you"), ("task", "Follow-up call")],
    ),
    ("purchase", event("purchase.completed", amount="75.50"), contact(), FIRED, None),
    # The prototype ignored minimum_amount: 30 fired the purchase rule.
    ("purchase", event("purchase.completed", amount=30), contact(), CONDITION_FALSE, []),
    ("purchase", event("purchase.completed", amount=50), contact(), CONDITION_FALSE, []),
    ("purchase", event("purchase.completed"), contact(), CONDITION_FALSE, []),
    ("purchase", event("purchase.completed", amount="n/a"), contact(), CONDITION_ERROR, []),
    (
        "high-score",
        event("score.crossed", threshold=80, direction="up", to=85),
        contact(score=85),
        FIRED,
        [("send_email", "vip_offer"), ("task", "Call this VIP lead")],
    ),
    (
        "high-score",
        event("score.crossed", threshold=80, direction="down"),
        contact(),
        CONDITION_FALSE,
        [],
    ),
    (
        "high-score",
        event("score.crossed", threshold=60, direction="up"),
        contact(),
        CONDITION_FALSE,
        [],
    ),
    (
        "unsubscribe",
        event("email.unsubscribed"),
        contact(),
        FIRED,
        [("score", -100), ("tag", "unsubscribed"), ("suppress", "unsubscribed")],
    ),
    (
        "assessment-answers",
        event("form.submitted", form="christmas-assessment", red_systems="2"),
        contact(),
        FIRED,
        [("set", 2), ("set", 0)],
    ),
    (
        "assessment-answers",
        event("form.submitted", form="newsletter"),
        contact(),
        CONDITION_FALSE,
        [],
    ),
    ("assessment-answers", event("form.submitted"), contact(), CONDITION_FALSE, []),
]


@pytest.mark.parametrize(("rule_id", "ev", "ct", "status", "actions"), CASES)
def test_default_rule(
    pack: Automation,
    rule_id: str,
    ev: dict[str, Any],
    ct: dict[str, Any],
    status: str,
    actions: list[tuple[str, Any]] | None,
) -> None:
    result = evaluate(pack, ev, ct, NOW)
    outcome = next(o for o in result.outcomes if o.rule_id == rule_id)
    assert outcome.status == status
    mine = [d for d in result.decisions if d.rule_id == rule_id]
    if actions is None:
        return
    got = []
    for d in mine:
        value = d.value if d.kind == "set" else getattr(d.spec, d.kind)
        got.append((d.kind, value))
    assert got == actions


def test_purchase_delays_become_jobs(pack: Automation) -> None:
    decisions = evaluate(pack, event("purchase.completed", amount=99), contact(), NOW).decisions
    by_kind = {d.kind: d for d in decisions}
    assert by_kind["score"].immediate and by_kind["score"].delay is None
    assert not by_kind["send_email"].immediate
    assert by_kind["send_email"].delay == timedelta(minutes=5)
    assert by_kind["task"].delay == timedelta(hours=24)


def test_high_score_call_is_a_call_task_after_two_hours(pack: Automation) -> None:
    ev = event("score.crossed", threshold=80, direction="up")
    task = next(d for d in evaluate(pack, ev, contact(), NOW).decisions if d.kind == "task")
    assert task.spec.kind == "call"
    assert task.spec.priority == "high"
    assert task.delay == timedelta(hours=2)


def test_a_zero_score_does_not_bypass_the_threshold(pack: Automation) -> None:
    # The prototype skipped the threshold check when the score was 0. Here the rule only
    # listens to a crossing event, which a score of 0 never produces.
    assert evaluate(pack, event("email.opened"), contact(score=0), NOW).decisions == []
    ev = event("score.crossed", threshold=80, direction="down", to=0)
    assert evaluate(pack, ev, contact(score=0), NOW).decisions == []


def test_condition_error_is_reported_with_the_rule_id(pack: Automation) -> None:
    result = evaluate(pack, event("purchase.completed", amount="n/a"), contact(), NOW)
    assert result.decisions == []
    [error] = result.errors
    assert error.rule_id == "purchase"
    assert error.where == "if"
    assert "double" in error.message


def test_unrelated_events_fire_nothing(pack: Automation) -> None:
    assert evaluate(pack, event("page.viewed", url="/"), contact(segments=VIP), NOW).decisions == []


SEGMENT_CASES: list[tuple[dict[str, Any], dict[str, Any], str | None]] = [
    # (rfm, attributes, expected value segment)
    ({}, {}, None),  # no purchase: no value
    ({"frequency": 0, "score": 0}, {}, None),
    ({"frequency": 1, "recency_days": 181, "score": 3.8}, {}, "Churn"),
    ({"frequency": 1, "recency_days": 180, "score": 3.8}, {}, "VIP"),
    ({"frequency": 2, "recency_days": 400, "score": 3.5}, {}, "VIP"),  # churn needs one order
    ({"frequency": 3, "recency_days": 10, "score": 1.5}, {}, "At Risk"),
    ({"frequency": 3, "recency_days": 10, "score": 1.51}, {}, "Standard"),
    ({"frequency": 3, "recency_days": 10, "score": 3.49}, {}, "Standard"),
    ({"frequency": 3, "recency_days": 10, "score": 4}, {}, "VIP"),
]


@pytest.mark.parametrize(("rfm", "attributes", "expected"), SEGMENT_CASES)
def test_value_segmentation(
    pack: Automation, rfm: dict[str, Any], attributes: dict[str, Any], expected: str | None
) -> None:
    result = assign(pack.segmentations, contact(rfm=rfm, attributes=attributes), NOW)
    assert result.values["value"] == expected
    assert result.errors == []


@pytest.mark.parametrize(
    ("red", "orange", "expected"),
    [
        (None, None, None),
        (2, 0, "CRITICAL"),
        (3, 5, "CRITICAL"),
        (1, 0, "URGENT"),
        (0, 2, "URGENT"),
        ("1", "0", "URGENT"),
        (0, 1, "OPTIMIZE"),
        (0, None, "OPTIMIZE"),
    ],
)
def test_assessment_segmentation(
    pack: Automation, red: Any, orange: Any, expected: str | None
) -> None:
    attributes = {
        k: v for k, v in (("red_systems", red), ("orange_systems", orange)) if v is not None
    }
    result = assign(pack.segmentations, contact(attributes=attributes), NOW)
    assert result.values["assessment"] == expected
    assert result.errors == []
