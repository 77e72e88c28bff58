"""Slack incoming-webhook bodies: ``{text, blocks}``.

``text`` is always present: Slack shows it in notifications and wherever blocks cannot be
drawn, and warns when it is missing. Slack answers a bad body with a 400 ``invalid_blocks``
that no retry fixes, so the shape is checked before sending.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

# https://api.slack.com/reference/block-kit/blocks and chat.postMessage's limits.
TEXT_MAX = 40_000
BLOCKS_MAX = 50
KEYS = {
    "text",
    "blocks",
    "attachments",
    "thread_ts",
    "mrkdwn",
    "unfurl_links",
    "unfurl_media",
    "username",
    "icon_emoji",
    "icon_url",
}


def slack_body(data: Any) -> dict[str, Any]:
    """A Slack incoming-webhook body from a rendered payload (text alone is a plain message)."""
    if isinstance(data, str):
        data = {"text": data}
    if not isinstance(data, Mapping):
        raise ValueError("a Slack payload is text or an object {text, blocks}")
    unknown = set(data) - KEYS
    if unknown:
        raise ValueError(f"unknown Slack message keys: {', '.join(sorted(unknown))}")
    text = data.get("text")
    if not isinstance(text, str) or not text.strip():
        raise ValueError("a Slack message needs text (the notification and fallback)")
    if len(text) > TEXT_MAX:
        raise ValueError(f"text is {len(text)} characters; Slack allows {TEXT_MAX}")
    body = dict(data)
    blocks = data.get("blocks")
    if blocks is not None:
        if not isinstance(blocks, list) or not 0 < len(blocks) <= BLOCKS_MAX:
            raise ValueError(f"blocks must be a list of 1 to {BLOCKS_MAX} blocks")
        for i, block in enumerate(blocks):
            if not isinstance(block, Mapping) or not isinstance(block.get("type"), str):
                raise ValueError(f"blocks[{i}] needs a type")
    return body
