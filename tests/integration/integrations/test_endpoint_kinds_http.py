"""Endpoint kinds ``json``, ``discord`` and ``slack`` through the delivery layer's webhook
handler, against a real local HTTP server that checks the documented body shapes."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from nurture.cli.main import app
from nurture.clock import Clock, SystemClock, VirtualClock
from nurture.config import Settings
from nurture.database.engine import Database
from nurture.errors import ProviderError
from nurture.integrations.outbound import Outbound, load_endpoints
from nurture.messaging.templates import template_store
from nurture.pack import load_pack
from nurture.providers.http import new_client
from nurture.providers.standard.outbound import WebhookPoster
from nurture.storage import contacts as contact_store
from nurture.storage import endpoints as endpoint_store
from nurture.testing import HookRecorder, Scripted, serve
from tests.helpers import Job, new_contact

ALERT_PAYLOAD = """
    payload:
      content: "🚨 **Hot Lead Alert!**"
      embeds:
        - title: CRITICAL Segment Contact
          color: 16711680
          fields:
            - {name: Email, value: "{{ contact.email }}", inline: true}
            - {name: Segment, value: "{{ contact.segments.assessment }}", inline: true}
            - {name: Red Systems, value: "{{ contact.attributes.red_systems }}", inline: true}
          footer: {text: BusOS Email Sequence}
"""


@pytest.fixture
def hook() -> Iterator[tuple[HookRecorder, str]]:
    recorder = HookRecorder()
    with serve(recorder.app()) as url:
        yield recorder, url


def outbound(
    db: Database,
    tmp_path: Path,
    yaml: str,
    settings: Settings | None = None,
    clock: Clock | None = None,
) -> Outbound:
    (tmp_path / "endpoints.yaml").write_text(yaml, encoding="utf-8")
    pack = load_pack(tmp_path)
    endpoints = load_endpoints(pack, settings or Settings())
    return Outbound(
        db,
        clock or SystemClock(),
        template_store(pack),
        WebhookPoster(new_client(5.0)),
        endpoints,
    )


def run(out: Outbound, job: Job) -> None:
    async def go() -> None:
        try:
            await out.send_webhook(job)
        finally:
            await out.channel.client.aclose()  # type: ignore[attr-defined]

    asyncio.run(go())


def critical_contact(db: Database) -> int:
    cid = new_contact(db, SystemClock(), "ann@example.com", first_name="Ann")
    with db.begin() as conn:
        state = contact_store.load(conn, cid)
        assert state is not None
        state.attributes["red_systems"] = 2
        state.segments["assessment"] = "CRITICAL"
        contact_store.save(conn, state, SystemClock().now())
    return cid


def job(endpoint: str, contact_id: int, key: str = "rule:1:hot:0", **extra: Any) -> Job:
    payload = {
        "endpoint": endpoint,
        "contact_id": contact_id,
        "event_id": None,
        "rule_id": "hot-lead-alert",
        "body": None,
        "vars": {},
        **extra,
    }
    return Job(key, payload)


def test_discord_alert_body_and_429(
    db: Database, tmp_path: Path, hook: tuple[HookRecorder, str]
) -> None:
    recorder, url = hook
    yaml = f"""
endpoints:
  - name: discord
    kind: discord
    url: {url}/api/webhooks/1/abc
    allow_private: true
{ALERT_PAYLOAD}"""
    clock = VirtualClock(datetime.now(UTC))
    out = outbound(db, tmp_path, yaml, clock=clock)
    cid = critical_contact(db)
    recorder.script.append(
        Scripted(429, {"retry_after": 7.5, "global": False}, {"Retry-After": "8"})
    )
    with pytest.raises(ProviderError) as err:
        run(out, job("discord", cid))
    assert not err.value.permanent and err.value.retry_after == 8

    # Any delivery to that webhook, by any worker, waits the 8 s out without a request ...
    out = outbound(db, tmp_path, yaml, clock=clock)
    with pytest.raises(ProviderError, match="local rate limit") as held:
        run(out, job("discord", cid, key="rule:2:hot:0"))
    assert held.value.retry_after == pytest.approx(8, abs=0.01)
    assert len(recorder.requests) == 1

    # ... then the retry goes out.
    clock.advance(timedelta(seconds=8))
    out = outbound(db, tmp_path, yaml, clock=clock)
    run(out, job("discord", cid))
    first, second = recorder.requests
    assert first.body == second.body  # the retry sends the same message
    assert second.path == "/api/webhooks/1/abc"
    assert second.headers["content-type"] == "application/json"
    assert "webhook-signature" not in second.headers
    body = second.body
    assert set(body) == {"content", "embeds", "allowed_mentions"}
    assert body["content"] == "🚨 **Hot Lead Alert!**"
    [embed] = body["embeds"]
    assert embed["title"] == "CRITICAL Segment Contact"
    assert embed["color"] == 16711680
    assert embed["fields"] == [
        {"name": "Email", "value": "ann@example.com", "inline": True},
        {"name": "Segment", "value": "CRITICAL", "inline": True},
        {"name": "Red Systems", "value": "2", "inline": True},
    ]
    assert embed["footer"] == {"text": "BusOS Email Sequence"}
    assert body["allowed_mentions"] == {"parse": []}


def test_slack_body(db: Database, tmp_path: Path, hook: tuple[HookRecorder, str]) -> None:
    recorder, url = hook
    recorder.ok_status, recorder.ok_body = 200, "ok"
    yaml = f"""
endpoints:
  - name: slack
    kind: slack
    url: {url}/services/T0/B0/xyz
    allow_private: true
    payload:
      text: "Hot lead: {{{{ contact.email }}}}"
      blocks:
        - type: section
          text:
            type: mrkdwn
            text: "*{{{{ contact.email }}}}* is {{{{ contact.segments.assessment }}}}"
"""
    out = outbound(db, tmp_path, yaml)
    run(out, job("slack", critical_contact(db)))
    [req] = recorder.requests
    assert req.body == {
        "text": "Hot lead: ann@example.com",
        "blocks": [
            {"type": "section", "text": {"type": "mrkdwn", "text": "*ann@example.com* is CRITICAL"}}
        ],
    }


def test_slack_body_without_text_fails_at_once(
    db: Database, tmp_path: Path, hook: tuple[HookRecorder, str]
) -> None:
    recorder, url = hook
    yaml = f"""
endpoints:
  - name: slack
    kind: slack
    url: {url}/services/T0/B0/xyz
    allow_private: true
    payload: {{blocks: [{{type: divider}}]}}
"""
    out = outbound(db, tmp_path, yaml)
    with pytest.raises(ProviderError) as err:
        run(out, job("slack", critical_contact(db)))
    assert err.value.permanent and "needs text" in str(err.value)
    assert recorder.requests == []


def test_json_catch_hook_is_plain_json_with_headers(
    db: Database, tmp_path: Path, hook: tuple[HookRecorder, str]
) -> None:
    recorder, url = hook
    recorder.ok_status = 202  # Power Automate's "When an HTTP request is received"
    yaml = """
endpoints:
  - name: power-automate
    kind: json
    url_env: NURTURE_POWER_AUTOMATE_URL
    allow_private: true
    headers: {x-source: nurture}
    payload:
      email: "{{ contact.email }}"
      rule: "{{ rule_id }}"
"""
    flow = f"{url}/workflows/abc/triggers/manual/paths/invoke?api-version=2016-06-01&sig=s3cr3t"
    settings = Settings(extra_secrets={"NURTURE_POWER_AUTOMATE_URL": flow})
    out = outbound(db, tmp_path, yaml, settings)
    run(out, job("power-automate", critical_contact(db)))
    [req] = recorder.requests
    assert req.path == "/workflows/abc/triggers/manual/paths/invoke"
    assert req.body == {"email": "ann@example.com", "rule": "hot-lead-alert"}
    assert req.headers["x-source"] == "nurture"
    assert req.headers["content-type"] == "application/json"
    assert "webhook-signature" not in req.headers


def test_an_endpoint_whose_url_variable_is_unset_is_switched_off(
    db: Database, tmp_path: Path
) -> None:
    yaml = """
endpoints:
  - name: discord
    kind: discord
    url_env: NURTURE_DISCORD_WEBHOOK_URL
    events: [task.created]
"""
    out = outbound(db, tmp_path, yaml)
    assert out.subscribers("task.created") == []  # announcements enqueue nothing for it
    # A job enqueued before the variable was unset ends without a request or an error.
    run(out, job("discord", critical_contact(db)))
    with db.read() as conn:
        assert endpoint_store.deliveries_for(conn, "discord") == []


def test_nurture_check_does_not_complain_about_the_silent_alert(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # no ./automation: the built-in pack
    for name in (
        "NURTURE_DISCORD_WEBHOOK_URL",
        "NURTURE_SLACK_WEBHOOK_URL",
        "NURTURE_AUTOMATION_DIR",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NURTURE_DATABASE_URL", f"sqlite:///{tmp_path / 'n.db'}")
    result = CliRunner().invoke(app, ["check"])
    assert result.exit_code == 0, result.output
    assert "configuration OK" in result.output
    assert "hot-lead-discord <- NURTURE_DISCORD_WEBHOOK_URL" in " ".join(result.output.split())
