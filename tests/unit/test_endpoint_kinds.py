"""Bodies per endpoint kind: Discord's and Slack's documented shapes and limits, plain JSON."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from nurture.errors import ProviderError
from nurture.providers.discord.outbound import discord_body
from nurture.providers.notion.outbound import key_filter, property_value
from nurture.providers.slack.outbound import slack_body
from nurture.services.endpoint_kinds import build_outgoing

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
