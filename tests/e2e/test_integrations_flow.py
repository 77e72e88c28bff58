"""The issue's "done when": a Christmas signup with two red systems produces the Discord hot
lead alert and a Notion page (against the local Notion fake) with the segment and, later, each
e-mail's sent date. The alert goes once per crossing, not per event, and no job at all exists
for Discord or Slack when its URL is unset. And a Power Automate-style flow both triggers
nurture (``?wait=true``) and is triggered by it (task announcements as plain JSON)."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from nurture.bootstrap import build_job_worker
from nurture.clock import VirtualClock
from nurture.config import Settings
from nurture.pack import DEFAULTS_DIR
from nurture.storage import api_keys
from nurture.storage import contacts as contact_store
from nurture.storage import endpoints as endpoint_store
from nurture.storage import jobs as job_store
from nurture.storage import messages as message_store
from nurture.storage import timeline as timeline_store
from nurture.testing import Harness, HookRecorder, harness, serve
from nurture.testing.notion import TOKEN, NotionFake

DATABASE = "fedcba9876543210fedcba9876543210"
WRITE_KEY = "wk_site"
SIGNUP = {
    "email": "ann@example.com",
    "first_name": "Ann",
    "business_name": "Ann's Salon",
    "assessment_score": 41,
    "red_systems": 2,
    "orange_systems": 1,
}
NOTION_YAML = """
endpoints:
  - name: notion-contacts
    kind: notion
    secret_env: NURTURE_NOTION_TOKEN
    database_id: {db}
    url: {url}
    key: Email
    properties:
      Email: {{type: email, from: contact.email}}
      Name: {{type: title, value: "{{{{ contact.first_name }}}}"}}
      Segment: {{type: select, from: contact.segments.assessment}}
      Booking Status: {{type: select, from: contact.attributes.booking_status}}
""" + "".join(
    f"      Email {n} Sent: {{{{type: date, from: steps.email-{n}.sent_at}}}}\n"
    for n in range(1, 8)
)


@pytest.fixture
def servers() -> Iterator[tuple[NotionFake, str, HookRecorder, str]]:
    notion = NotionFake(
        DATABASE,
        {
            "Email": "email",
            "Name": "title",
            "Segment": "select",
            "Booking Status": "select",
            **{f"Email {n} Sent": "date" for n in range(1, 8)},
        },
    )
    discord = HookRecorder(ok_status=204)
    with serve(notion.app()) as notion_url, serve(discord.app()) as discord_url:
        yield notion, notion_url, discord, discord_url


def automation(tmp_path: Path, notion_url: str) -> Path:
    folder = tmp_path / "automation"
    shutil.copytree(DEFAULTS_DIR, folder)
    alerts = folder / "team_alerts.yaml"
    # The fake Discord listens on 127.0.0.1, which the SSRF guard refuses unless allowed.
    alerts.write_text(
        alerts.read_text().replace(
            "url_env: NURTURE_DISCORD_WEBHOOK_URL",
            "url_env: NURTURE_DISCORD_WEBHOOK_URL\n    allow_private: true",
        )
    )
    (folder / "notion.yaml").write_text(NOTION_YAML.format(db=DATABASE, url=notion_url))
    return folder


def signup(h: Harness, **changes: Any) -> None:
    r = h.client.post(
        "/webhook/christmas-signup",
        json={**SIGNUP, **changes},
        headers={"x-nurture-write-key": WRITE_KEY},
    )
    assert r.status_code == 202, r.text
    h.process()


def run_jobs(h: Harness) -> int:
    return asyncio.run(build_job_worker(h.container).drain())


def test_christmas_signup_alerts_discord_and_mirrors_to_notion(
    servers: tuple[NotionFake, str, HookRecorder, str],
    make_settings: Callable[..., Settings],
    clock: VirtualClock,
    tmp_path: Path,
) -> None:
    notion, notion_url, discord, discord_url = servers
    settings = make_settings(
        automation_dir=automation(tmp_path, notion_url),
        write_keys=WRITE_KEY,
        discord_webhook_url=f"{discord_url}/api/webhooks/42/token",
        extra_secrets={"NURTURE_NOTION_TOKEN": TOKEN},
        outbox_dir=tmp_path / "outbox",
    )
    with harness(settings, clock) as h:
        signup(h)
        run_jobs(h)  # the alert and e-mail 1 are due at once
        [alert] = discord.bodies
        assert alert["content"] == "🚨 **Hot Lead Alert!**"
        [embed] = alert["embeds"]
        assert embed["title"] == "CRITICAL Segment Contact"
        assert embed["color"] == 16711680
        assert {f["name"]: f["value"] for f in embed["fields"]} == {
            "Email": "ann@example.com",
            "Segment": "CRITICAL",
            "Red Systems": "2",
        }
        assert embed["footer"] == {"text": "BusOS Email Sequence"}

        assert notion.pages == {}  # nothing waited for Notion; the mirror follows shortly
        clock.advance(timedelta(seconds=5))
        run_jobs(h)
        page = notion.page_for("Email", "ann@example.com")
        assert page["Segment"] == "CRITICAL"
        assert page["Email 1 Sent"] is not None and page["Email 1 Sent"].startswith("2026-11-23")
        assert page["Email 2 Sent"] is None

        # The same contact signs up again, still CRITICAL: no second alert (once per crossing).
        clock.advance(timedelta(hours=1))
        signup(h, assessment_score=45)
        run_jobs(h)
        assert len(discord.bodies) == 1

        # A day later e-mail 2 goes out, and its date reaches Notion after it.
        clock.advance(timedelta(hours=23, seconds=5))
        run_jobs(h)
        clock.advance(timedelta(seconds=5))
        run_jobs(h)
        page = notion.page_for("Email", "ann@example.com")
        assert page["Email 2 Sent"] is not None and page["Email 2 Sent"].startswith("2026-11-24")
        assert len(notion.pages) == 1

        # Dropping to URGENT and back to CRITICAL is a new crossing: a new alert.
        clock.advance(timedelta(hours=1))
        signup(h, red_systems=1, assessment_score=50)
        signup(h, red_systems=3, assessment_score=30)
        run_jobs(h)
        assert len(discord.bodies) == 2

        # The rest of the drip: every e-mail's sent date reaches the one page, after it is sent.
        end = clock.now() + timedelta(days=11)
        worker = build_job_worker(h.container)
        while True:
            asyncio.run(worker.drain())
            h.process()
            with h.container.db.read() as conn:
                nxt = job_store.next_run_at(conn, worker.registry.kinds)
            if nxt is None or nxt > end:
                break
            clock.set(max(nxt, clock.now()))
        with h.container.db.read() as conn:
            cid = contact_store.id_by_email(conn, "ann@example.com")
            assert cid is not None
            sent = {
                m["step_id"]: m["sent_at"]
                for m in message_store.for_contact(conn, cid)
                if m["status"] == "sent"
            }
        assert sorted(sent) == [f"email-{n}" for n in range(1, 8)]
        page = notion.page_for("Email", "ann@example.com")
        for n in range(1, 8):
            assert page[f"Email {n} Sent"] == sent[f"email-{n}"].isoformat()
        assert page["Segment"] == "CRITICAL" and page["Booking Status"] is None
        assert len(notion.pages) == 1 and len(discord.bodies) == 2


def test_the_alert_is_silent_without_discord_or_slack_urls(
    make_settings: Callable[..., Settings], clock: VirtualClock, tmp_path: Path
) -> None:
    settings = make_settings(write_keys=WRITE_KEY, outbox_dir=tmp_path / "outbox")
    with harness(settings, clock) as h:
        signup(h)
        run_jobs(h)
        with h.container.db.read() as conn:
            hooks = job_store.search(conn, kind="webhook", limit=10)
            cid = contact_store.id_by_email(conn, SIGNUP["email"])
            assert cid is not None
            notes = timeline_store.for_contact(conn, cid)
        # The contact did become CRITICAL, but no job was enqueued for either endpoint (none
        # to fail, none waiting), and the alert rule did not even fire.
        changes = [n["detail"] for n in notes if n["kind"] == "segment.changed"]
        assert {"segmentation": "assessment", "from": None, "to": "CRITICAL"} in changes
        assert hooks == []
        assert not [n for n in notes if n["rule_id"] == "hot-lead-alert"]


def test_with_only_discord_set_only_discord_is_alerted(
    servers: tuple[NotionFake, str, HookRecorder, str],
    make_settings: Callable[..., Settings],
    clock: VirtualClock,
    tmp_path: Path,
) -> None:
    _, notion_url, discord, discord_url = servers
    settings = make_settings(
        automation_dir=automation(tmp_path, notion_url),
        write_keys=WRITE_KEY,
        discord_webhook_url=f"{discord_url}/api/webhooks/42/token",
        extra_secrets={"NURTURE_NOTION_TOKEN": TOKEN},
        outbox_dir=tmp_path / "outbox",
    )
    with harness(settings, clock) as h:
        signup(h)
        run_jobs(h)
        with h.container.db.read() as conn:
            hooks = job_store.search(conn, kind="webhook", limit=10)
        assert [j["payload"]["endpoint"] for j in hooks] == ["hot-lead-discord"]
        assert hooks[0]["status"] == "done" and len(discord.bodies) == 1


FLOW_YAML = """
endpoints:
  - name: power-automate
    kind: json
    url_env: NURTURE_POWER_AUTOMATE_URL
    allow_private: true          # the fake flow listens on 127.0.0.1
    headers: {x-source: nurture}
    events: [task.created]       # no payload: the flow gets contact, event, rule_id and task
"""
FLOW_PATH = "/workflows/abc/triggers/manual/paths/invoke"
API_KEY = "nk_power_automate"


def test_a_power_automate_style_flow_triggers_nurture_and_is_triggered(
    make_settings: Callable[..., Settings], clock: VirtualClock, tmp_path: Path
) -> None:
    """docs/integrations.md "Power Automate round trip": flow A posts a purchase with
    ``?wait=true`` and acts on the tasks in the answer; when a task falls due nurture calls
    flow B ("When an HTTP request is received") with the task, as plain JSON."""
    folder = tmp_path / "automation"
    shutil.copytree(DEFAULTS_DIR, folder)
    (folder / "flow.yaml").write_text(FLOW_YAML)
    flow = HookRecorder(ok_status=202)
    with serve(flow.app()) as flow_url:
        settings = make_settings(
            automation_dir=folder,
            outbox_dir=tmp_path / "outbox",
            extra_secrets={
                "NURTURE_POWER_AUTOMATE_URL": f"{flow_url}{FLOW_PATH}"
                "?api-version=2016-06-01&sp=%2Ftriggers%2Fmanual%2Frun&sv=1.0&sig=s3cr3t"
            },
        )
        with harness(settings, clock) as h:
            with h.container.db.begin() as conn:
                api_keys.create(conn, "power-automate", API_KEY, clock.now())
            # A. The flow triggers nurture (the HTTP action of flow A) ...
            r = h.client.post(
                "/api/v1/events?wait=true",
                json={
                    "id": "order-1001",
                    "type": "purchase.completed",
                    "contact": {"email": "ann@example.com", "first_name": "Ann"},
                    "data": {"amount": 99, "currency": "EUR", "order_id": "1001"},
                },
                headers={"authorization": f"Bearer {API_KEY}"},
            )
            assert r.status_code == 200, r.text
            [result] = r.json()["results"]
            # ... and acts on the answer: every task to come, the VIP rule's included.
            tasks = [
                (s["title"], s["task_kind"], s["due_at"])
                for outcome in (result, *result["derived"])
                for s in outcome["scheduled"]
                if s["action"] == "task"
            ]
            start = clock.now()
            assert sorted(tasks) == [
                ("Call this VIP lead", "call", (start + timedelta(hours=2)).isoformat()),
                ("Follow-up call", "task", (start + timedelta(hours=24)).isoformat()),
            ]
            assert flow.requests == []

            # B. Two hours later the VIP call task is due: nurture triggers flow B.
            clock.advance(timedelta(hours=2))
            run_jobs(h)
            [req] = flow.requests
            assert req.path == FLOW_PATH
            assert req.headers["content-type"] == "application/json"
            assert req.headers["x-source"] == "nurture"
            assert "webhook-signature" not in req.headers  # the URL's sig= authenticates
            body = req.body
            assert body["task"]["title"] == "Call this VIP lead"
            assert body["task"]["kind"] == "call" and body["task"]["priority"] == "high"
            assert body["task"]["due_at"] == clock.now().isoformat()
            assert body["rule_id"] == "high-score"
            assert body["contact"]["email"] == "ann@example.com"
            assert body["event"]["type"] == "score.crossed"

            clock.advance(timedelta(hours=22))
            run_jobs(h)
            assert [r.body["task"]["title"] for r in flow.requests] == [
                "Call this VIP lead",
                "Follow-up call",
            ]
            with h.container.db.read() as conn:
                delivered = endpoint_store.deliveries_for(conn, "power-automate")
            assert [d["status_code"] for d in delivered] == [202, 202]
