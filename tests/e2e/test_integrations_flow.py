"""The issue's "done when": a Christmas signup with two red systems produces the Discord hot
lead alert and a Notion page (against the local Notion fake) with the segment and, later, each
e-mail's sent date. The alert goes once per crossing, not per event, and nothing is sent to
Discord or Slack when neither URL is set."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from nurture.automation.loader import DEFAULTS_DIR
from nurture.bootstrap import build_job_worker
from nurture.clock import VirtualClock
from nurture.config import Settings
from nurture.storage import jobs as job_store
from nurture.testing import Harness, harness
from tests.integration.integration_fakes import TOKEN, HookRecorder, NotionFake, serve

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
      Email 1 Sent: {{type: date, from: steps.email-1.sent_at}}
      Email 2 Sent: {{type: date, from: steps.email-2.sent_at}}
"""


@pytest.fixture
def servers() -> Iterator[tuple[NotionFake, str, HookRecorder, str]]:
    notion = NotionFake(
        DATABASE,
        {
            "Email": "email",
            "Name": "title",
            "Segment": "select",
            "Email 1 Sent": "date",
            "Email 2 Sent": "date",
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


def test_the_alert_is_silent_without_discord_or_slack_urls(
    make_settings: Callable[..., Settings], clock: VirtualClock, tmp_path: Path
) -> None:
    settings = make_settings(write_keys=WRITE_KEY, outbox_dir=tmp_path / "outbox")
    with harness(settings, clock) as h:
        signup(h)
        run_jobs(h)
        with h.container.db.read() as conn:
            hooks = job_store.search(conn, kind="webhook", limit=10)
        # The rule fired; both endpoints are switched off, so the jobs end without a request.
        assert hooks and {j["status"] for j in hooks} == {"done"}
