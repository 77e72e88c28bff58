"""CEL expressions: only the fields an expression can reach are converted, and that never
changes what it evaluates to."""

from __future__ import annotations

from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nurture.analytics.scoring import ScoreInputs, compute
from nurture.automation.step import delayed_decision
from nurture.core.scoring import ScoringSpec
from nurture.rules.decide import Decision
from nurture.rules.expr import Expr, ExprError, Scope, _reachable
from nurture.rules.models import ActionSpec, RuleSpec

NOW = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)
CONTACT: dict[str, Any] = {
    "id": 7,
    "email": "ann@example.com",
    "tags": ["vip", "newsletter"],
    "segments": {"value": "VIP"},
    "attributes": {"plan": "pro", "seats": 4},
    "rfm": {"score": 3.6, "frequency": 2},
    "status": "subscribed",
    "score": 81,
}
EVENT: dict[str, Any] = {"id": 3, "type": "email.clicked", "data": {"link": "x", "amount": 60}}


@pytest.mark.parametrize(
    ("source", "contact", "event"),
    [
        ("has(contact.segments.value) && contact.segments.value == 'VIP'", {"segments"}, None),
        ("event.data.amount > 5 && event.data.contact == 1", None, {"data"}),
        ("'vip' in contact.tags || contact . score > 3", {"tags", "score"}, None),
        ("contact.tags.exists(t, t == 'x')", {"tags"}, None),
        # Anything but ``contact.field`` binds the whole variable.
        ("contact['tags'].size() > 0", "all", None),
        ("size(contact) > 1", "all", None),
        ("contact.all(k, k != '')", "all", None),
        ("'contact' == event.type", "all", {"type"}),
        ("event.data.items.exists(contact, contact == 1)", "all", {"data"}),
    ],
)
def test_reachable_fields(source: str, contact: Any, event: Any) -> None:
    expected_contact = None if contact == "all" else frozenset(contact or ())
    expected_event = None if event == "all" else frozenset(event or ())
    assert _reachable(source, "contact") == expected_contact
    assert _reachable(source, "event") == expected_event


def test_a_scope_rebinds_when_a_later_expression_reads_more() -> None:
    scope = Scope({"contact": CONTACT, "event": EVENT, "now": NOW})
    assert Expr.compile("contact.segments.value == 'VIP'").test(scope)
    # Bound so far: only ``segments``; this one needs ``tags`` too.
    assert Expr.compile("'vip' in contact.tags && contact.segments.value == 'VIP'").test(scope)
    assert Expr.compile("size(contact) == 8").test(scope)  # the whole map
    assert Expr.compile("contact.score == 81").test(scope)
    with pytest.raises(ExprError):
        Expr.compile("contact.nothing == 1").test(scope)
    scope.set("contact", {**CONTACT, "score": 12})
    assert Expr.compile("contact.score == 12").test(scope)


SOURCES = [
    "has(contact.segments.value) && contact.segments.value in ['VIP', 'Standard']",
    "'vip' in contact.tags",
    "contact.attributes.seats * 2 == 8",
    "has(contact.rfm.score) && double(contact.rfm.score) >= 3.5",
    "size(contact.tags) + size(contact) > 3",
    "event.data.amount > 50 && contact.status == 'subscribed'",
    "has(event.data.missing)",
    "contact.score >= 80 && now > timestamp('2026-01-01T00:00:00Z')",
    "contact.nothing == 1",
]


def _outcome(expr: Expr, scope: Scope | dict[str, Any]) -> Any:
    try:
        return expr.evaluate(scope)
    except ExprError as exc:
        return ("error", str(exc).split(":")[0])


@settings(max_examples=100, deadline=None)
@given(order=st.permutations(SOURCES))
def test_projection_never_changes_a_result(order: list[str]) -> None:
    """Evaluated in any order in one shared scope, every expression gives what it gives
    against the full, unprojected variables."""
    variables = {"contact": CONTACT, "event": EVENT, "now": NOW}
    scope = Scope(variables)
    for source in order:
        expr = Expr.compile(source)
        assert _outcome(expr, scope) == _outcome(expr, dict(variables))


def test_breakdown_as_dict_lists_every_field() -> None:
    breakdown = compute(ScoringSpec(), ScoreInputs(2.0, 3, 1, 45, 12.0))
    assert breakdown.as_dict() == asdict(breakdown)


def test_any_action_may_be_delayed_and_is_then_not_immediate() -> None:
    spec = RuleSpec.model_validate(
        {
            "id": "r",
            "on": "e.x",
            "do": [{"score": 5, "after": "2h"}, {"tag": "t"}, {"send_email": "x"}],
        }
    )
    kinds = [
        (d.immediate, d.deferred)
        for d in (Decision("r", i, a.action, a) for i, a in enumerate(spec.do))
    ]
    assert kinds == [(False, True), (True, False), (False, False)]
    assert spec.export()["do"][0] == {"score": 5, "after": "2h"}


def test_a_delayed_decision_round_trips_through_its_job_payload() -> None:
    action = ActionSpec.model_validate({"set": "stage", "expr": "event.data.x", "after": "1d"})
    decision = delayed_decision(
        {"rule_id": "r", "action_index": 2, "event_id": 9, "action": action.export(), "value": 3}
    )
    assert (decision.rule_id, decision.action_index, decision.kind) == ("r", 2, "set")
    assert decision.value == 3
    assert decision.immediate  # its delay is spent
