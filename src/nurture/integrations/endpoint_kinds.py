"""What an outbound endpoint of each ``kind`` sends, given its rendered payload.

- ``standard``: ``{"type", "timestamp", "data"}`` signed with Standard Webhooks;
- ``json``: the payload itself, as plain JSON with the endpoint's configured headers (Power
  Automate "When an HTTP request is received", Zapier and n8n catch hooks); signed only when
  the endpoint has a secret;
- ``discord``: ``{content, embeds}``; ``slack``: ``{text, blocks}`` (incoming webhooks).

(``notion`` endpoints are not webhooks: ``integrations/notion.py`` keeps their pages.) The
delivery layer's queue, rate limit, retries and delivery log are the same for every kind; only
the body and headers differ, which is all this module decides.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from nurture.errors import ProviderError
from nurture.providers.discord.outbound import discord_body
from nurture.providers.slack.outbound import slack_body

WEBHOOK_KINDS = ("standard", "json", "discord", "slack")
KINDS = (*WEBHOOK_KINDS, "notion")

# Used when an endpoint of these kinds declares no ``payload:`` (templates over the variables;
# ``type`` is what is delivered: the rule's event type, or ``task.created`` for an announcement).
_SUMMARY = (
    "{{ contact.email if contact else '' }}"
    "{% if task is defined and task %} · {{ task.title }}"
    "{% if task.kind == 'call' %} (call){% endif %}, due {{ task.due_at }}{% endif %}"
)
DEFAULT_PAYLOADS: dict[str, Any] = {
    "discord": {"content": "**{{ type }}**: " + _SUMMARY},
    "slack": {"text": "*{{ type }}*: " + _SUMMARY},
}

# (requests per second, burst) per endpoint when it sets no ``rate_per_second``. Discord allows
# a webhook about 30 messages a minute (bursts of 5 in 2 s); Slack about one message a second
# per incoming webhook. Other receivers are the flow owner's to limit.
DEFAULT_RATES: dict[str, tuple[float, int]] = {
    "discord": (0.5, 5),
    "slack": (1.0, 1),
}


@dataclass(frozen=True, slots=True)
class Outgoing:
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)
    # Sign with Standard Webhooks (``webhook-id``/``-timestamp``/``-signature``) before sending.
    signed: bool = True


def build_outgoing(
    kind: str,
    *,
    event_type: str,
    timestamp: Any,
    data: Any,
    headers: Mapping[str, str] | None = None,
    has_secret: bool = True,
) -> Outgoing:
    """The body and extra headers for one delivery; a body the receiver would refuse raises a
    permanent ``ProviderError`` (no retry fixes it)."""
    extra = {k.lower(): v for k, v in (headers or {}).items()}
    extra["content-type"] = "application/json"
    try:
        if kind == "standard":
            envelope = {"type": event_type, "timestamp": timestamp, "data": data}
            return Outgoing(orjson.dumps(envelope), extra, signed=True)
        if kind == "json":
            return Outgoing(orjson.dumps(data), extra, signed=has_secret)
        if kind == "discord":
            return Outgoing(orjson.dumps(discord_body(data)), extra, signed=False)
        if kind == "slack":
            return Outgoing(orjson.dumps(slack_body(data)), extra, signed=False)
    except (ValueError, TypeError) as exc:
        raise ProviderError(f"{kind} payload: {exc}", permanent=True) from None
    raise ProviderError(f"endpoint kind {kind!r} does not send webhooks", permanent=True)
