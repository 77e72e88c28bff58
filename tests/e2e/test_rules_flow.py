"""A signed event in, processed by the worker: the score and tags change, and the timeline and
the score API explain every point. Plus the rules API: list, dry run, tasks."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from nurture.clock import VirtualClock
from nurture.config import Settings
from nurture.storage import api_keys
from nurture.storage import contacts as contact_store
from nurture.testing import Harness, brevo_request, harness, new_secret, signed_json

SECRET = new_secret()
BREVO_TOKEN = "brevo-token-rules-e2e"
KEY = "nk_rules_e2e"
AUTH = {"authorization": f"Bearer {KEY}"}
EMAIL = "vip@example.com"


@pytest.fixture
def h(make_settings: Callable[..., Settings], clock: VirtualClock) -> Iterator[Harness]:
    settings = make_settings(track_secret=SECRET, brevo_webhook_token=BREVO_TOKEN)
    with harness(settings, clock) as hh:
        with hh.container.db.begin() as conn:
            api_keys.create(conn, "rules-e2e", KEY, clock.now())
        yield hh


def post(h: Harness, payload: dict[str, Any]) -> list[int]:
    body, headers = signed_json(SECRET, payload, h.clock.now())
    r = h.client.post("/webhooks/track", content=body, headers=headers)
    assert r.status_code == 202, r.text
    ids: list[int] = r.json()["event_ids"]
    return ids


def make_vip(h: Harness) -> int:
    post(h, {"type": "page.viewed", "contact": {"email": EMAIL}, "data": {"url": "/"}})
    h.process()
    with h.container.db.begin() as conn:
        state = contact_store.load_by_email(conn, EMAIL)
        assert state is not None
        state.rfm = {
            "recency_days": 3,
            "frequency": 2,
            "monetary": 420.0,
            "score": 3.5,
            "last_order_at": (h.clock.now() - timedelta(days=3)).isoformat(),
        }
        contact_store.save(conn, state, h.clock.now())
        return state.id


def test_signed_click_scores_tags_and_the_timeline_explains_it(h: Harness) -> None:
    contact_id = make_vip(h)
    [event_id] = post(
        h,
        {
            "type": "email.clicked",
            "contact": {"email": EMAIL},
            "data": {"link": "https://example.com/offer"},
        },
    )
    h.process()

    contact = h.client.get(f"/api/v1/contacts/{EMAIL}", headers=AUTH).json()
    assert "engaged" in contact["tags"]
    assert contact["segments"]["value"] == "VIP"
    # 50 + 35 (rfm 3.5) + 4 (two engagement events) + 10 (two orders) + 15 (click rule) -> 100
    assert contact["score"] == 100

    timeline = h.client.get(f"/api/v1/contacts/{contact_id}/timeline", headers=AUTH).json()
    fired = {i["rule_id"]: i for i in timeline["items"] if i["kind"] == "rule.fired"}
    assert set(fired) == {"email-clicked", "high-score"}
    assert fired["email-clicked"]["event_id"] == event_id
    # The crossing of 80 was queued as a derived event of the click, which fired the VIP rule.
    derived = h.client.get(f"/api/v1/events/{fired['high-score']['event_id']}", headers=AUTH)
    assert derived.json()["type"] == "score.crossed"
    assert derived.json()["parent_id"] == event_id
    actions = fired["email-clicked"]["detail"]["actions"]
    assert [(a["action"], a.get("score"), a.get("tag")) for a in actions] == [
        ("score", 15, None),
        ("tag", None, "engaged"),
    ]
    crossed = [i for i in timeline["items"] if i["kind"] == "score.crossed"]
    assert crossed and crossed[0]["detail"]["threshold"] == 80

    score = h.client.get(f"/api/v1/contacts/{EMAIL}/score", headers=AUTH).json()
    assert score["total"] == 100
    assert score["components"]["engagement"] == 15
    assert score["components"]["rfm"] == 35
    assert [(r["rule_id"], r["event_id"], r["delta"]) for r in score["rules"]] == [
        ("email-clicked", event_id, 15)
    ]

    # The VIP rule's jobs are visible, waiting for the delivery handlers.
    jobs = h.client.get("/api/v1/jobs", headers=AUTH).json()["items"]
    kinds = sorted((j["kind"], j["status"]) for j in jobs)
    assert ("send_email", "scheduled") in kinds
    assert ("task", "scheduled") in kinds


def test_dry_run_changes_nothing_and_says_why(h: Harness) -> None:
    contact_id = make_vip(h)
    before = h.client.get(f"/api/v1/contacts/{contact_id}", headers=AUTH).json()
    r = h.client.post(
        "/api/v1/rules/dry-run",
        headers=AUTH,
        json={"event": {"type": "email.opened", "data": {}}, "contact_ref": EMAIL},
    )
    assert r.status_code == 200, r.text
    result = r.json()
    statuses = {x["rule_id"]: x["status"] for x in result["rules"]}
    assert statuses["email-opened"] == "fired"
    assert statuses["purchase"] == "not-triggered"
    assert [d["action"] for d in result["decisions"]] == ["score"]

    r = h.client.post(
        "/api/v1/rules/dry-run",
        headers=AUTH,
        json={"event": {"type": "purchase.completed", "data": {"amount": "a lot"}}},
    )
    result = r.json()
    assert {x["rule_id"]: x["status"] for x in result["rules"]}["purchase"] == "condition-error"
    assert result["errors"][0]["rule_id"] == "purchase"
    assert result["decisions"] == []

    r = h.client.post(
        "/api/v1/rules/dry-run",
        headers=AUTH,
        json={"event": {"type": "email.opened"}, "contact": {"segments": {}, "rfm": {}}},
    )
    assert {x["rule_id"]: x["status"] for x in r.json()["rules"]}["email-opened"] == (
        "condition-false"
    )
    after = h.client.get(f"/api/v1/contacts/{contact_id}", headers=AUTH).json()
    assert after == before

    bad = h.client.post("/api/v1/rules/dry-run", headers=AUTH, json={"event": {"data": {}}})
    assert bad.status_code == 422
    assert bad.json()["errors"][0]["field"] == "event.type"


@pytest.mark.parametrize("discord", [None, "https://discord.example/api/webhooks/1/x"])
def test_dry_run_leaves_out_webhooks_to_switched_off_endpoints(
    make_settings: Callable[..., Settings], clock: VirtualClock, discord: str | None
) -> None:
    """The hot-lead alert posts to Discord and Slack; an endpoint whose URL variable is unset
    is switched off, and the dry run shows what the worker would really do."""
    settings = make_settings(discord_webhook_url=discord) if discord else make_settings()
    with harness(settings, clock) as hh:
        with hh.container.db.begin() as conn:
            api_keys.create(conn, "dry", KEY, clock.now())
        r = hh.client.post(
            "/api/v1/rules/dry-run",
            headers=AUTH,
            json={
                "event": {
                    "type": "segment.changed",
                    "data": {"segmentation": "assessment", "from": "URGENT", "to": "CRITICAL"},
                }
            },
        )
    assert r.status_code == 200, r.text
    result = r.json()
    hooks = [d["webhook"] for d in result["decisions"] if d["action"] == "webhook"]
    if discord:
        assert hooks == ["hot-lead-discord"]
        assert result["switched_off_endpoints"] == {"hot-lead-slack": "NURTURE_SLACK_WEBHOOK_URL"}
    else:
        assert hooks == []
        assert result["switched_off_endpoints"] == {
            "hot-lead-discord": "NURTURE_DISCORD_WEBHOOK_URL",
            "hot-lead-slack": "NURTURE_SLACK_WEBHOOK_URL",
        }
        statuses = {x["rule_id"]: x["status"] for x in result["rules"]}
        assert statuses["hot-lead-alert"] == "disabled"


def test_rules_and_tasks_listing_need_a_key(h: Harness) -> None:
    assert h.client.get("/api/v1/rules").status_code == 401
    assert h.client.get("/api/v1/tasks").status_code == 401
    rules = h.client.get("/api/v1/rules", headers=AUTH).json()
    assert rules["rules"][0]["id"] == "unsubscribe"
    assert {s["id"] for s in rules["segmentations"]} == {"value", "assessment"}
    assert h.client.get("/api/v1/tasks", headers=AUTH).json() == {"items": [], "next_after": None}
    assert h.client.get("/api/v1/contacts/nobody@example.com/score", headers=AUTH).status_code == (
        404
    )


def brevo_click(h: Harness, link: str) -> int:
    """A Brevo ``click`` webhook as Brevo sends it, authenticated with the configured token."""
    ts = int(h.clock.now().timestamp())
    payload = {
        "event": "click",
        "email": EMAIL.upper(),
        "id": 7781,
        "date": h.clock.now().strftime("%Y-%m-%d %H:%M:%S"),
        "ts": ts,
        "ts_event": ts,
        "ts_epoch": ts * 1000,
        "message-id": "<202611230900.1@smtp-relay.mailin.fr>",
        "subject": "Our offer",
        "link": link,
    }
    body, headers = brevo_request(BREVO_TOKEN, payload)
    r = h.client.post("/webhooks/brevo", content=body, headers=headers)
    assert r.status_code == 202, r.text
    [event_id] = r.json()["event_ids"]
    assert isinstance(event_id, int)
    return event_id


def test_brevo_click_scores_and_tags_once_even_when_replayed(h: Harness) -> None:
    contact_id = make_vip(h)
    event_id = brevo_click(h, "https://example.com/offer")
    h.process()

    contact = h.client.get(f"/api/v1/contacts/{contact_id}", headers=AUTH).json()
    assert "engaged" in contact["tags"]
    assert contact["score"] == 100
    score = h.client.get(f"/api/v1/contacts/{EMAIL}/score", headers=AUTH).json()
    assert [(r["rule_id"], r["event_id"], r["delta"]) for r in score["rules"]] == [
        ("email-clicked", event_id, 15)
    ]
    timeline = h.client.get(f"/api/v1/contacts/{contact_id}/timeline", headers=AUTH).json()
    fired = [i for i in timeline["items"] if i["kind"] == "rule.fired"]
    assert ("email-clicked", event_id) in [(i["rule_id"], i["event_id"]) for i in fired]
    jobs_before = h.client.get("/api/v1/jobs", headers=AUTH).json()["items"]

    # The operator replays the click: nothing is scored, tagged, ledgered or enqueued again.
    r = h.client.post(f"/api/v1/events/{event_id}/replay", headers=AUTH)
    assert r.status_code == 202
    h.process()
    again = h.client.get(f"/api/v1/contacts/{contact_id}", headers=AUTH).json()
    assert again["score"] == contact["score"]
    assert again["tags"] == contact["tags"]
    rescored = h.client.get(f"/api/v1/contacts/{EMAIL}/score", headers=AUTH).json()
    assert rescored["rules"] == score["rules"]
    assert rescored["inputs"] == score["inputs"]  # the click is not counted twice either
    assert h.client.get("/api/v1/jobs", headers=AUTH).json()["items"] == jobs_before
    timeline = h.client.get(f"/api/v1/contacts/{contact_id}/timeline", headers=AUTH).json()
    skipped = [i for i in timeline["items"] if i["kind"] == "rule.skipped"]
    assert [(i["rule_id"], i["event_id"]) for i in skipped] == [("email-clicked", event_id)]


def test_dry_run_reports_a_once_limit_from_the_stored_history(
    make_settings: Callable[..., Settings], clock: VirtualClock, tmp_path: Path
) -> None:
    (tmp_path / "rules.yaml").write_text(
        "rules:\n"
        "  - id: welcome\n"
        "    on: page.viewed\n"
        "    once: contact\n"
        "    do:\n"
        "      - tag: welcomed\n"
        "  - id: daily\n"
        "    on: page.viewed\n"
        "    once: 24h\n"
        "    do:\n"
        "      - score: 1\n"
    )
    settings = make_settings(track_secret=SECRET, automation_dir=tmp_path)
    with harness(settings, clock) as hh:
        with hh.container.db.begin() as conn:
            api_keys.create(conn, "rules-e2e", KEY, clock.now())
        post(hh, {"type": "page.viewed", "contact": {"email": EMAIL}, "data": {"url": "/"}})
        hh.process()
        clock.advance(timedelta(hours=25))
        r = hh.client.post(
            "/api/v1/rules/dry-run",
            headers=AUTH,
            json={"event": {"type": "page.viewed", "data": {}}, "contact_ref": EMAIL},
        )
        assert r.status_code == 200, r.text
        rules = {x["rule_id"]: x for x in r.json()["rules"]}
        assert rules["welcome"]["status"] == "once-limit"
        assert rules["welcome"]["detail"].startswith("once: contact; last fired ")
        assert rules["daily"]["status"] == "fired"  # its 24 h window has passed
        assert [d["rule_id"] for d in r.json()["decisions"]] == ["daily"]
