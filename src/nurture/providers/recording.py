"""Recording channels: the fakes for the channel ports, and what ``NURTURE_DRY_RUN`` sends through.

They keep the messages in memory and touch no network; ``fail_with`` scripts failures. Tests keep
every message (``keep=None``); a dry run keeps the last ``keep`` only, so a worker that dry-runs a
campaign of any size stays flat in memory.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from nurture.core.channels import (
    OutboundEmail,
    OutboundSms,
    SendResult,
    WebhookResponse,
)


def _record(items: list[Any], item: Any, keep: int | None) -> None:
    items.append(item)
    if keep is not None and len(items) > 2 * keep:
        del items[:-keep]  # amortised: trimmed once per ``keep`` additions


@dataclass
class RecordingEmail:
    name: str = "recording"
    sent: list[OutboundEmail] = field(default_factory=list)
    uncertain: list[int] = field(default_factory=list)
    # Called before recording; raise from it to simulate a provider failure.
    fail_with: Callable[[OutboundEmail], None] | None = None
    keep: int | None = None  # at most about this many recent messages (None: all)

    async def send(self, message: OutboundEmail, *, uncertain: bool) -> SendResult:
        if uncertain:
            _record(self.uncertain, message.message_id, self.keep)
        if self.fail_with is not None:
            self.fail_with(message)
        _record(self.sent, message, self.keep)
        return SendResult(f"recorded-{message.message_id}", "recorded_again" if uncertain else None)

    def to(self, address: str) -> list[OutboundEmail]:
        return [m for m in self.sent if m.to == address]


@dataclass
class RecordingSms:
    name: str = "recording"
    sent: list[OutboundSms] = field(default_factory=list)
    keep: int | None = None

    async def send(self, message: OutboundSms, *, uncertain: bool) -> SendResult:
        _record(self.sent, message, self.keep)
        return SendResult(
            f"recorded-sms-{message.message_id}", "recorded_again" if uncertain else None
        )


@dataclass
class RecordedPost:
    url: str
    msg_id: str
    timestamp: int
    body: bytes
    secret: str


@dataclass
class RecordingWebhooks:
    name: str = "recording"
    posts: list[RecordedPost] = field(default_factory=list)
    status_code: int = 200
    keep: int | None = None

    async def post(
        self,
        url: str,
        secret: str,
        msg_id: str,
        timestamp: int,
        body: bytes,
        *,
        timeout: float | None = None,
        headers: dict[str, str] | None = None,
        connect_to: str | None = None,
    ) -> WebhookResponse:
        _record(self.posts, RecordedPost(url, msg_id, timestamp, body, secret), self.keep)
        return WebhookResponse(self.status_code)
