"""Bodies per endpoint kind: Discord's and Slack's documented shapes and limits, plain JSON;
switched-off endpoints (URL variable unset) leave no action behind, and ``check_endpoints``
reports them without failing."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest

from nurture.config import Settings
from nurture.errors import ConfigError, ProviderError
from nurture.integrations.endpoint_kinds import DEFAULT_PAYLOADS, build_outgoing
from nurture.integrations.outbound import (
    Endpoint,
    check_endpoints,
    limiter_name,
    load_endpoints,
    render_tree,
    switched_off,
    without_switched_off,
)
from nurture.messaging.templates import TemplateStore
from nurture.pack import DEFAULTS_DIR, Pack, load_pack
from nurture.providers.discord.outbound import discord_body
from nurture.providers.notion.outbound import key_filter, property_value
from nurture.providers.slack.outbound import slack_body
from nurture.rules.book import load_automation

ALERT: dict[str, Any] = {
    "content": "🚨 **Hot Lead Alert!**",
    "embeds": [
        {
            "title": "CRITICAL Segment Contact",
            "color": "16711680",
            "fields": [
                {"name": "Email", "value": "ann@example.com", "inline": True},
                {"name": "Segment", "value": "CRITICAL", "inline": True},
                {"name": "Red Systems", "value": "2", "inline": True},
            ],
            "footer": {"text": "BusOS Email Sequence"},
        }
    ],
}


def test_discord_alert_body() -> None:
    body = discord_body(ALERT)
    assert body["content"] == "🚨 **Hot Lead Alert!**"
    [embed] = body["embeds"]
    assert embed["color"] == 16711680  # rendered templates give text; Discord wants an integer
    assert [f["name"] for f in embed["fields"]] == ["Email", "Segment", "Red Systems"]
    assert embed["footer"] == {"text": "BusOS Email Sequence"}
    assert body["allowed_mentions"] == {"parse": []}
    assert discord_body("hello") == {"content": "hello", "allowed_mentions": {"parse": []}}


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ({"content": "x" * 2001}, "2000"),
        ({"content": ""}, "needs content or embeds"),
        ({"embeds": [{"title": "t" * 257}]}, "256"),
        ({"embeds": [{"title": "t", "color": 2**24}]}, "color"),
        ({"embeds": [{"fields": [{"name": "a", "value": ""}]}]}, "non-empty value"),
        ({"embeds": [{}] * 11}, "at most 10"),
        ({"embeds": [{"description": "d" * 4000}, {"description": "d" * 2001}]}, "6000"),
        ({"text": "slack style"}, "unknown Discord"),
    ],
)
def test_discord_limits(payload: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        discord_body(payload)


def test_slack_body() -> None:
    body = slack_body({"text": "hot lead", "blocks": [{"type": "section"}]})
    assert body == {"text": "hot lead", "blocks": [{"type": "section"}]}
    assert slack_body("plain") == {"text": "plain"}
    with pytest.raises(ValueError, match="needs text"):
        slack_body({"blocks": [{"type": "section"}]})
    with pytest.raises(ValueError, match="needs a type"):
        slack_body({"text": "t", "blocks": [{"text": "no type"}]})
    with pytest.raises(ValueError, match="1 to 50"):
        slack_body({"text": "t", "blocks": [{"type": "divider"}] * 51})


def test_build_outgoing_per_kind() -> None:
    data = {"email": "ann@example.com"}
    std = build_outgoing("standard", event_type="task.created", timestamp="T", data=data)
    assert orjson.loads(std.body) == {"type": "task.created", "timestamp": "T", "data": data}
    assert std.signed
    plain = build_outgoing(
        "json", event_type="x", timestamp="T", data=data, headers={"X-Flow": "1"}, has_secret=False
    )
    assert orjson.loads(plain.body) == data and not plain.signed
    assert plain.headers == {"x-flow": "1", "content-type": "application/json"}
    with pytest.raises(ProviderError) as err:
        build_outgoing("slack", event_type="x", timestamp="T", data={"blocks": []})
    assert err.value.permanent


def test_notion_property_values() -> None:
    assert property_value("title", "Ann") == {
        "title": [{"type": "text", "text": {"content": "Ann"}}]
    }
    assert property_value("select", "CRITICAL") == {"select": {"name": "CRITICAL"}}
    assert property_value("select", None) == {"select": None}
    assert property_value("multi_select", ["vip", "a,b"]) == {
        "multi_select": [{"name": "vip"}, {"name": "a b"}]
    }
    assert property_value("number", "42") == {"number": 42}
    assert property_value("date", "2026-12-01") == {"date": {"start": "2026-12-01"}}
    assert property_value("date", "2026-12-01T10:00:00Z") == {
        "date": {"start": "2026-12-01T10:00:00+00:00"}
    }
    assert property_value("checkbox", "yes") == {"checkbox": True}
    assert property_value("email", "") == {"email": None}
    with pytest.raises(ValueError):
        property_value("date", "soon")
    assert key_filter("Email", "email", "a@b.c") == {
        "property": "Email",
        "email": {"equals": "a@b.c"},
    }


# -- switched-off endpoints and `nurture check` ------------------------------------------------

MIXED = """
endpoints:
  - {name: flow, kind: json, url: "https://flow.example.com/hook"}
  - {name: alerts, kind: discord, url_env: NURTURE_DISCORD_WEBHOOK_URL}
rules:
  - id: alert-only
    on: custom.hot
    do:
      - webhook: alerts
  - id: mixed
    on: custom.hot
    do:
      - tag: hot
      - webhook: alerts
      - webhook: flow
"""


def _pack(tmp_path: Path, text: str) -> Pack:
    (tmp_path / "automation.yaml").write_text(text, encoding="utf-8")
    return load_pack(tmp_path)


def test_switched_off_endpoints_leave_no_action_behind(tmp_path: Path) -> None:
    pack = _pack(tmp_path, MIXED)
    endpoints = load_endpoints(pack, Settings())
    assert switched_off(endpoints) == {"alerts": "NURTURE_DISCORD_WEBHOOK_URL"}
    automation, changed = without_switched_off(load_automation(pack), endpoints)
    assert changed == ["alert-only", "mixed"]
    assert automation.candidates("custom.hot") == [automation.rule("mixed")]
    only = automation.rule("alert-only")
    assert only is not None and not only.spec.enabled
    mixed = automation.rule("mixed")
    assert mixed is not None
    # The kept actions keep their index: job keys do not change with the configuration.
    assert [(a.index, a.kind) for a in mixed.actions] == [(0, "tag"), (2, "webhook")]

    on = Settings(discord_webhook_url="https://discord.com/api/webhooks/1/x")
    endpoints = load_endpoints(pack, on)
    assert switched_off(endpoints) == {}
    same, changed = without_switched_off(load_automation(pack), endpoints)
    assert changed == [] and len(same.candidates("custom.hot")) == 2


def test_check_reports_switched_off_endpoints_and_refuses_unknown_ones(tmp_path: Path) -> None:
    summary = check_endpoints(_pack(tmp_path, MIXED), Settings())
    assert summary == (
        "2 endpoints (switched off, variable unset: alerts <- NURTURE_DISCORD_WEBHOOK_URL)"
    )
    assert check_endpoints(load_pack(DEFAULTS_DIR), Settings()).startswith("2 endpoints")
    bad = MIXED.replace("webhook: flow", "webhook: flwo")
    with pytest.raises(ConfigError, match=r"automation.yaml:\d+: rule 'mixed'.*'flwo' is not"):
        check_endpoints(_pack(tmp_path, bad), Settings())


def test_default_payloads_carry_the_type_and_an_announced_task() -> None:
    store = TemplateStore([])
    task = {"title": "Call back", "kind": "call", "due_at": "2026-11-24T09:00:00+00:00"}
    variables = {"type": "task.created", "contact": {"email": "ann@example.com"}, "task": task}
    rendered = render_tree(store, DEFAULT_PAYLOADS["discord"], variables, "discord")
    assert rendered == {
        "content": "**task.created**: ann@example.com · Call back (call), "
        "due 2026-11-24T09:00:00+00:00"
    }
    plain = {"type": "purchase.completed", "contact": None, "event": None}
    assert render_tree(store, DEFAULT_PAYLOADS["slack"], plain, "slack") == {
        "text": "*purchase.completed*: "
    }


def test_endpoint_rate_limits_default_per_kind() -> None:
    def rate(**fields: Any) -> tuple[float, int]:
        return Endpoint(name="e", url="https://x.test/h", **fields).rate

    assert rate(kind="discord") == (0.5, 5)
    assert rate(kind="slack") == (1.0, 1)
    assert rate(kind="json") == (0.0, 1)  # no limit: the flow owner's to set
    assert rate(kind="json", rate_per_second=2.5) == (2.5, 2)
    assert rate(kind="discord", rate_per_second=0) == (0.0, 1)
    assert rate(kind="slack", burst=4) == (1.0, 4)
    assert limiter_name("e") == "webhook:e"
    long = limiter_name("x" * 100)
    assert len(long) <= 64 and long != limiter_name("x" * 99 + "y")
