"""``nurture check``, ``rules export|import|test`` and ``contacts explain`` as a user runs them."""

from __future__ import annotations

import json
from pathlib import Path

from sqlalchemy import select
from typer.testing import CliRunner

from nurture.automation.step import RulesStep
from nurture.cli.main import app
from nurture.clock import VirtualClock
from nurture.database.engine import Database
from nurture.intake.process import EventProcessor
from nurture.pack import DEFAULTS_DIR
from nurture.rules.book import load
from nurture.schema.tables import contacts
from nurture.storage import scores as score_store
from nurture.storage.retention import FOLDED
from tests.integration.automation.test_step import insert

runner = CliRunner()


def run(args: list[str], database_url: str, **env: str) -> tuple[int, str]:
    result = runner.invoke(app, args, env={"NURTURE_DATABASE_URL": database_url, **env})
    return result.exit_code, result.output


def test_check_validates_a_folder(database_url: str, tmp_path: Path) -> None:
    code, out = run(["check"], database_url)
    assert code == 0, out
    assert "built-in default pack: 8 rules, 2 segmentations" in out
    (tmp_path / "rules.yaml").write_text(
        "rules:\n  - id: r\n    on: email.opened\n    if: 'event.data.x >'\n    do:\n"
        "      - score: 1\n"
    )
    code, out = run(["check", str(tmp_path)], database_url)
    assert code == 1
    assert "rules.yaml:4: 0.if: CEL does not compile" in " ".join(out.split())


def test_export_import_round_trip(database_url: str, tmp_path: Path) -> None:
    code, out = run(["rules", "export", "--json"], database_url)
    assert code == 0, out
    exported = json.loads(out)
    assert [r["id"] for r in exported][:2] == ["email-opened", "email-clicked"]
    src = tmp_path / "rules.json"
    src.write_text(out)
    target = tmp_path / "pack"
    target.mkdir()
    code, out = run(
        ["rules", "import", str(src), "--out", str(target / "rules.yaml")], database_url
    )
    assert code == 0, out
    assert [r.spec.export() for r in load(target).rules] == exported
    code, out = run(
        ["rules", "import", str(src), "--out", str(target / "rules.yaml")], database_url
    )
    assert code == 1 and "exists" in out
    src.write_text(json.dumps([{"id": "x", "on": "e.x", "if": "1 +", "do": [{"tag": "t"}]}]))
    code, out = run(["rules", "import", str(src)], database_url)
    assert code == 1 and "CEL does not compile" in " ".join(out.split())


def test_rules_test_is_a_dry_run(database_url: str, tmp_path: Path) -> None:
    event = tmp_path / "event.json"
    event.write_text(json.dumps({"type": "purchase.completed", "data": {"amount": 30}}))
    code, out = run(["rules", "test", str(event)], database_url)
    assert code == 0, out
    result = json.loads(out)
    assert {r["rule_id"]: r["status"] for r in result["rules"]}["purchase"] == "condition-false"
    assert result["decisions"] == []

    event.write_text(json.dumps({"type": "email.clicked", "data": {}}))
    contact = tmp_path / "contact.json"
    contact.write_text(
        json.dumps({"email": "a@example.com", "rfm": {"frequency": 2, "score": 3.6}})
    )
    code, out = run(["rules", "test", str(event), "--contact", str(contact)], database_url)
    result = json.loads(out)
    assert result["segments"] == {"value": "VIP"}
    assert [d["action"] for d in result["decisions"]] == ["score", "tag"]
    assert result["score"]["after"] > result["score"]["before"]

    event.write_text("{not json")
    code, out = run(["rules", "test", str(event)], database_url)
    assert code == 1 and "invalid JSON" in out


def test_contacts_explain(database_url: str, db: Database, clock: VirtualClock) -> None:
    event_id = insert(db, clock, "purchase.completed", email="ann@example.com", amount=70)
    EventProcessor(db, clock, [RulesStep(load(DEFAULTS_DIR))]).drain()
    code, out = run(["contacts", "explain", "Ann@Example.com"], database_url)
    assert code == 0, out
    assert "score 100" in out
    assert f"purchase  event {event_id}  Purchase completed" in out
    # Retention sums the ledger's old rows into one without a rule or an event.
    with db.begin() as conn:
        contact_id = conn.execute(select(contacts.c.id)).scalar_one()
        row = {"contact_id": contact_id, "event_id": None, "rule_id": None, "action_index": None,
               "component": "rule", "delta": 5, "reason": FOLDED, "score_before": 100,
               "score_after": 100, "at": clock.now()}  # fmt: skip
        score_store.append(conn, [row])
    code, out = run(["contacts", "explain", "ann@example.com"], database_url)
    assert code == 0, out
    assert f"+5 earlier rules {FOLDED}" in " ".join(out.split()) and "event None" not in out
    code, out = run(["contacts", "explain", "nobody@example.com"], database_url)
    assert code == 1 and "no contact" in out
