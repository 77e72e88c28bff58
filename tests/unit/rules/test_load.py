"""Loading the automation folder: typed models, and errors that name file, line and field."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from nurture.errors import ConfigError
from nurture.pack import DEFAULTS_DIR
from nurture.rules.book import export_rules, load
from nurture.rules.importer import import_rules


def write(tmp_path: Path, name: str, text: str) -> Path:
    (tmp_path / name).write_text(text, encoding="utf-8")
    return tmp_path


RULE = """rules:
  - id: r1
    on: email.opened
    do:
      - score: 5
"""


def test_default_pack_loads() -> None:
    automation = load(DEFAULTS_DIR)
    ids = [r.id for r in automation.ordered_rules]
    assert ids[:2] == ["unsubscribe", "assessment-answers"]  # priority 100, ties in file order
    assert {s.id for s in automation.segmentations} == {"value", "assessment"}
    assert automation.scoring.thresholds == [80]


def test_rules_may_span_files(tmp_path: Path) -> None:
    write(tmp_path, "a.yaml", RULE)
    write(tmp_path, "b.yaml", RULE.replace("r1", "r2"))
    assert [r.id for r in load(tmp_path).rules] == ["r1", "r2"]


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        (RULE.replace("      - score: 5", "      - score: 5\n        tag: x"), "b.yaml:5: 0.do.0"),
        (RULE.replace("score: 5", "scor: 5"), "b.yaml:5: 0.do.0.scor"),
        (RULE.replace("    on: email.opened\n", ""), "b.yaml:2: 0.on: Field required"),
        (RULE.replace("do:", "priority: 101\n    do:"), "b.yaml:4: 0.priority"),
        (RULE.replace("score: 5", "tag: x\n        after: soon"), "b.yaml:6: 0.do.0.after"),
        (RULE.replace("score: 5", "score: 5\n        after: 5 minutes"), "b.yaml:6: 0.do.0.after"),
        (RULE.replace("do:", "once: sometimes\n    do:"), "b.yaml:4: 0.once"),
        (RULE.replace("email.opened", "schedule"), "needs a valid cron"),
        (RULE.replace("score: 5", "set: plan"), "set needs exactly one of value: or expr:"),
    ],
)
def test_schema_errors_name_file_line_and_field(tmp_path: Path, text: str, fragment: str) -> None:
    write(tmp_path, "b.yaml", text)
    with pytest.raises(ConfigError) as err:
        load(tmp_path)
    assert fragment in str(err.value)


def test_cel_compile_error_is_a_load_error_with_line(tmp_path: Path) -> None:
    write(tmp_path, "r.yaml", RULE.replace("    do:", "    if: event.data.amount >\n    do:"))
    with pytest.raises(ConfigError) as err:
        load(tmp_path)
    message = str(err.value)
    assert "r.yaml:4: 0.if: CEL does not compile" in message


def test_cel_error_in_action_expression_and_segment(tmp_path: Path) -> None:
    write(tmp_path, "r.yaml", RULE.replace("score: 5", "set: plan\n        expr: '1 +'"))
    with pytest.raises(ConfigError, match=r"r.yaml:6: 0.do.0.expr: CEL does not compile"):
        load(tmp_path)
    write(
        tmp_path,
        "r.yaml",
        "segments:\n  - id: s\n    values:\n      - value: A\n        if: ')('\n",
    )
    with pytest.raises(ConfigError, match=r"r.yaml:5: 0.values.0.if: CEL does not compile"):
        load(tmp_path)


def test_duplicate_rule_id_names_both_places(tmp_path: Path) -> None:
    write(tmp_path, "a.yaml", RULE)
    write(tmp_path, "b.yaml", RULE)
    with pytest.raises(
        ConfigError, match=r"b.yaml:2: 0.id: rule 'r1' already defined at .*a.yaml:2"
    ):
        load(tmp_path)


def test_forcing_a_computed_segmentation_is_refused(tmp_path: Path) -> None:
    write(tmp_path, "r.yaml", RULE.replace("score: 5", "segment: value\n        value: VIP"))
    write(tmp_path, "s.yaml", "segments:\n  - id: value\n    values:\n      - value: VIP\n")
    with pytest.raises(ConfigError, match="computed by segments"):
        load(tmp_path)


def test_scoring_section_is_validated(tmp_path: Path) -> None:
    write(tmp_path, "s.yaml", "scoring:\n  base: 40\n  half_life: 0s\n")
    with pytest.raises(ConfigError, match=r"s.yaml:3: half_life"):
        load(tmp_path)
    write(tmp_path, "s.yaml", "scoring:\n  base: 40\n  thresholds: [60, 90]\n")
    scoring = load(tmp_path).scoring
    assert (scoring.base, scoring.thresholds, scoring.rfm_weight) == (40, [60, 90], 10)


def test_export_then_import_round_trips(tmp_path: Path) -> None:
    automation = load(DEFAULTS_DIR)
    exported = export_rules(automation)
    json.dumps(exported)  # plain JSON
    back = import_rules(exported)
    assert [r.export() for r in back] == exported


def test_import_reads_the_prototype_export() -> None:
    prototype = [
        {
            "rule_id": "rule_purchase",
            "trigger": "purchase",
            "conditions": {"minimum_amount": 50},
            "actions": [
                {
                    "action_type": "update_score",
                    "config": {"score_delta": 50, "reason": "P"},
                    "delay_minutes": 0,
                },
                {
                    "action_type": "send_email",
                    "config": {"template": "thank_you"},
                    "delay_minutes": 5,
                },
                {
                    "action_type": "create_task",
                    "config": {"task": "Follow-up call"},
                    "delay_minutes": 1440,
                },
            ],
            "enabled": True,
            "priority": 90,
            "description": "Purchase workflow",
        },
        {
            "rule_id": "rule_high_score",
            "trigger": "lead_score_high",
            "conditions": {"score_threshold": 80},
            "actions": [
                {
                    "action_type": "schedule_call",
                    "config": {"priority": "high"},
                    "delay_minutes": 120,
                },
            ],
            "priority": 95,
        },
        {
            "rule_id": "rule_email_opened",
            "trigger": "email_opened",
            "conditions": {"segment": ["Standard", "VIP"]},
            "actions": [{"action_type": "update_score", "config": {"score_delta": 5}}],
        },
    ]
    purchase, high, opened = (r.export() for r in import_rules(prototype))
    assert purchase["on"] == "purchase.completed"
    assert purchase["if"] == "has(event.data.amount) && double(event.data.amount) > 50.0"
    assert purchase["do"] == [
        {"score": 50, "reason": "P"},
        {"send_email": "thank_you", "after": "5m"},
        {"task": "Follow-up call", "after": "1d"},
    ]
    assert high["on"] == "score.crossed"
    assert high["if"] == 'event.data.direction == "up" && event.data.threshold == 80'
    assert high["do"] == [{"task": "Call", "kind": "call", "priority": "high", "after": "2h"}]
    assert opened["if"] == (
        'has(contact.segments.value) && contact.segments.value in ["Standard", "VIP"]'
    )


def test_import_rejects_what_it_cannot_translate() -> None:
    with pytest.raises(ConfigError, match=r"rules\[0\]: unknown trigger 'nope'"):
        import_rules([{"rule_id": "x", "trigger": "nope", "actions": []}])
    with pytest.raises(ConfigError, match=r"rules\[0\]\.do\.0"):
        import_rules([{"id": "x", "on": "email.opened", "do": [{"score": 1, "tag": "y"}]}])
