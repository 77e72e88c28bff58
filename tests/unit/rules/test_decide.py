"""decide(): priority, ties, stop, once, errors, and properties."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from nurture.rules.book import from_specs
from nurture.rules.decide import (
    CONDITION_ERROR,
    DISABLED,
    FIRED,
    NOT_TRIGGERED,
    ONCE_LIMIT,
    STOPPED,
    decide,
    evaluate,
)
from nurture.rules.models import RuleSpec

NOW = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)
CONTACT: dict[str, Any] = {"id": 1, "segments": {}, "attributes": {"plan": "pro"}, "score": 50}


def rule(id_: str, on: str = "e.x", **extra: Any) -> RuleSpec:
    body: dict[str, Any] = {"id": id_, "on": on, "do": [{"tag": id_}]}
    body.update(extra)
    return RuleSpec.model_validate(body)


def ev(type_: str = "e.x", **data: Any) -> dict[str, Any]:
    return {"id": 1, "type": type_, "source": "t", "data": data, "occurred_at": NOW}


def fired(decisions: list[Any]) -> list[str]:
    return [d.rule_id for d in decisions]


def test_priority_higher_first_and_ties_in_file_order() -> None:
    automation = from_specs(
        [rule("a", priority=10), rule("b", priority=90), rule("c", priority=10), rule("d")]
    )
    assert fired(decide(automation, ev(), CONTACT, NOW)) == ["b", "d", "a", "c"]


def test_stop_ends_lower_priorities_only_when_the_rule_fires() -> None:
    automation = from_specs(
        [
            rule("high", priority=90, stop=True, **{"if": "event.data.go == true"}),
            rule("low", priority=10),
        ]
    )
    result = evaluate(automation, ev(go=True), CONTACT, NOW)
    assert fired(result.decisions) == ["high"]
    assert [(o.rule_id, o.status) for o in result.outcomes] == [("high", FIRED), ("low", STOPPED)]
    assert fired(decide(automation, ev(go=False), CONTACT, NOW)) == ["low"]


def test_once_per_contact_and_per_window() -> None:
    automation = from_specs([rule("ever", once="contact"), rule("daily", once="24h")])
    assert fired(decide(automation, ev(), CONTACT, NOW)) == ["ever", "daily"]
    history = {"ever": NOW - timedelta(days=300), "daily": NOW - timedelta(hours=23)}
    result = evaluate(automation, ev(), CONTACT, NOW, history)
    assert result.decisions == []
    assert {o.status for o in result.outcomes} == {ONCE_LIMIT}
    history["daily"] = NOW - timedelta(hours=24)
    assert fired(decide(automation, ev(), CONTACT, NOW, history)) == ["daily"]


def test_condition_must_be_boolean() -> None:
    automation = from_specs([rule("r", **{"if": "event.data.amount"})])
    result = evaluate(automation, ev(amount=3), CONTACT, NOW)
    assert result.outcomes[0].status == CONDITION_ERROR
    assert "not a boolean" in result.errors[0].message


def test_missing_field_does_not_fire_and_is_reported() -> None:
    automation = from_specs([rule("r", **{"if": "event.data.amount > 5"}), rule("s")])
    result = evaluate(automation, ev(), CONTACT, NOW)
    assert fired(result.decisions) == ["s"]
    assert result.errors[0].rule_id == "r"
    assert "amount" in result.errors[0].message


def test_set_evaluates_expressions_and_an_error_drops_only_that_action() -> None:
    spec = RuleSpec.model_validate(
        {
            "id": "r",
            "on": "e.x",
            "do": [
                {"set": "plan", "expr": "event.data.plan + '-' + contact.attributes.plan"},
                {"set": "bad", "expr": "event.data.nope"},
                {"set": "fixed", "value": 3},
            ],
        }
    )
    result = evaluate(from_specs([spec]), ev(plan="team"), CONTACT, NOW)
    assert [(d.spec.set, d.value) for d in result.decisions] == [("plan", "team-pro"), ("fixed", 3)]
    assert [(e.rule_id, e.where) for e in result.errors] == [("r", "do.1.expr")]


def test_now_is_available_to_conditions() -> None:
    automation = from_specs(
        [rule("r", **{"if": "now - timestamp(event.data.at) > duration('24h')"})]
    )
    old = (NOW - timedelta(days=2)).isoformat()
    assert fired(decide(automation, ev(at=old), CONTACT, NOW)) == ["r"]
    assert decide(automation, ev(at=NOW.isoformat()), CONTACT, NOW) == []


def test_explain_lists_every_rule_with_a_reason() -> None:
    automation = from_specs([rule("a"), rule("b", on="e.y"), rule("c", enabled=False)])
    statuses = {
        o.rule_id: o.status for o in evaluate(automation, ev(), CONTACT, NOW, explain=True).outcomes
    }
    assert statuses == {"a": FIRED, "b": NOT_TRIGGERED, "c": DISABLED}


def test_a_rule_can_listen_to_several_events() -> None:
    automation = from_specs([rule("r", on=["e.x", "e.y"])])  # type: ignore[arg-type]
    assert fired(decide(automation, ev("e.y"), CONTACT, NOW)) == ["r"]


# -- properties ---------------------------------------------------------------------------------

TYPES = ["e.a", "e.b", "e.c"]
CONDITIONS = [
    None,
    "event.data.n > 3",
    "event.data.n % 2 == 0",
    "contact.score >= 50",
    "event.data.missing",
]
rule_specs = st.builds(
    lambda i, on, cond, prio, stop: RuleSpec.model_validate(
        {
            "id": f"r{i}",
            "on": on,
            "priority": prio,
            "stop": stop,
            "do": [{"score": i}],
            **({"if": cond} if cond else {}),
        }
    ),
    st.integers(0, 10_000),
    st.sampled_from(TYPES),
    st.sampled_from(CONDITIONS),
    st.integers(1, 100),
    st.booleans(),
)
rule_lists = st.lists(rule_specs, max_size=12, unique_by=lambda r: r.id)


@settings(max_examples=150, deadline=None)
@given(rules=rule_lists, n=st.integers(0, 10), type_=st.sampled_from(TYPES))
def test_decide_is_deterministic(rules: list[RuleSpec], n: int, type_: str) -> None:
    automation = from_specs(rules)
    first = decide(automation, ev(type_, n=n), CONTACT, NOW)
    assert decide(automation, ev(type_, n=n), CONTACT, NOW) == first
    assert decide(from_specs(rules), ev(type_, n=n), CONTACT, NOW) == first


@settings(max_examples=150, deadline=None)
@given(rules=rule_lists, n=st.integers(0, 10), seed=st.integers(0, 2**32))
def test_unrelated_rules_do_not_change_decisions(rules: list[RuleSpec], n: int, seed: int) -> None:
    """Adding, removing or shuffling rules of other event types changes nothing for e.a."""
    related = [r for r in rules if r.on == ["e.a"]]
    unrelated = [r for r in rules if r.on != ["e.a"]]
    baseline = decide(from_specs(related), ev("e.a", n=n), CONTACT, NOW)
    mixed = related + unrelated
    random.Random(seed).shuffle(unrelated)
    # Keep the related rules' relative order (ties are decided by file order), interleave the rest.
    interleaved: list[RuleSpec] = []
    pool = list(unrelated)
    for r in related:
        if pool:
            interleaved.append(pool.pop())
        interleaved.append(r)
    interleaved.extend(pool)
    assert decide(from_specs(mixed), ev("e.a", n=n), CONTACT, NOW) == baseline
    assert decide(from_specs(interleaved), ev("e.a", n=n), CONTACT, NOW) == baseline
