"""The dry run (``nurture rules test``, ``POST /api/v1/rules/dry-run``): why each rule does or
does not fire, the decisions, and the score the event would leave; pure."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from nurture.core.scoring import ScoringSpec
from nurture.rules.book import from_specs
from nurture.rules.dryrun import contact_from_json, dry_run, event_from_json
from nurture.rules.models import RuleSpec

NOW = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)


def test_statuses_decisions_and_score() -> None:
    automation = from_specs(
        [
            RuleSpec.model_validate({"id": "now", "on": "e.x", "do": [{"score": 10}]}),
            RuleSpec.model_validate(
                {"id": "later", "on": "e.x", "do": [{"score": 20, "after": "1d"}]}
            ),
            RuleSpec.model_validate(
                {"id": "once", "on": "e.x", "once": "24h", "do": [{"tag": "t"}]}
            ),
            RuleSpec.model_validate(
                {"id": "big", "on": "e.x", "if": "event.data.n > 5", "do": [{"tag": "b"}]}
            ),
            RuleSpec.model_validate(
                {"id": "bad", "on": "e.x", "if": "event.data.nope > 1", "do": [{"tag": "x"}]}
            ),
            RuleSpec.model_validate({"id": "other", "on": "e.y", "do": [{"tag": "o"}]}),
        ],
        scoring=ScoringSpec(thresholds=[55], engagement_events=[]),
    )
    event = event_from_json({"type": "e.x", "data": {"n": 1}}, NOW)
    contact = contact_from_json({"email": "a@example.com"})
    history = {"once": NOW - timedelta(hours=1)}
    result = dry_run(automation, event, contact, NOW, history)
    statuses = {r["rule_id"]: r["status"] for r in result["rules"]}
    assert statuses == {
        "now": "fired",
        "later": "fired",
        "once": "once-limit",
        "big": "condition-false",
        "bad": "condition-error",
        "other": "not-triggered",
    }
    assert [(d["rule_id"], d["immediate"]) for d in result["decisions"]] == [
        ("now", True),
        ("later", False),
    ]
    assert result["decisions"][1]["after"] == "1d"
    # The delayed 20 points come later: this event leaves 60, crossing 55.
    assert result["score"] == {
        "before": 50,
        "after": 60,
        "crossings": [{"threshold": 55, "direction": "up"}],
    }
    assert result["errors"][0]["rule_id"] == "bad"
