"""Recording channels: the fakes for the channel ports, and what ``NURTURE_DRY_RUN`` sends through.

They keep every message in memory and touch no network; ``fail_with`` scripts failures.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from nurture.core.channels import (
    OutboundEmail,
    OutboundSms,
    SendResult,
    WebhookResponse,
)


@dataclass
class RecordingEmail:
    name: str = "recording"
    sent: list[OutboundEmail] = field(default_factory=list)
    uncertain: list[int] = field(default_factory=list)
    # Called before recording; raise from it to simulate a provider failure.
    fail_with: Callable[[OutboundEmail], None] | None = None

    async def send(self, message: OutboundEmail, *, uncertain: bool) -> SendResult:
        if uncertain:
            self.uncertain.append(message.message_id)
        if self.fail_with is not None:
            self.fail_with(message)
        self.sent.append(message)
        return SendResult(f"recorded-{message.message_id}", "recorded_again" if uncertain else None)

    def to(self, address: str) -> list[OutboundEmail]:
        return [m for m in self.sent if m.to == address]


@dataclass
class RecordingSms:
    name: str = "recording"
    sent: list[OutboundSms] = field(default_factory=list)

    async def send(self, message: OutboundSms, *, uncertain: bool) -> SendResult:
        self.sent.append(message)
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
        self.posts.append(RecordedPost(url, msg_id, timestamp, body, secret))
        return WebhookResponse(self.status_code)
