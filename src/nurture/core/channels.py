"""Outbound channel ports: what a sender gets, what it returns, how it reports failure.

Each provider (``providers/<vendor>/sender.py``) implements one of these; the recording fakes
live in ``nurture.providers.recording``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from nurture.errors import ProviderError


@dataclass(frozen=True, slots=True)
class OutboundEmail:
    """A fully rendered e-mail. ``message_id`` is nurture's id (the ``messages`` row), ``key`` the
    job key it was claimed under; both are stable across retries of the same send."""

    message_id: int
    key: str
    to: str
    sender: str
    subject: str
    html: str | None
    text: str | None
    to_name: str | None = None
    # Extra headers (List-Unsubscribe, ...). ``Message-ID`` is derived from ``key`` by senders.
    headers: dict[str, str] = field(default_factory=dict)
    # A provider-side template (Brevo) with its params, used instead of html/text when set.
    provider_template: int | None = None
    params: dict[str, Any] = field(default_factory=dict)
    transactional: bool = False


@dataclass(frozen=True, slots=True)
class OutboundSms:
    message_id: int
    key: str
    to: str
    sender: str
    text: str
    transactional: bool = True


@dataclass(frozen=True, slots=True)
class SendResult:
    """``provider_message_id`` links later delivery events back; ``settled`` says how an uncertain
    earlier attempt was resolved (``None`` when there was none)."""

    provider_message_id: str | None
    settled: str | None = None


class SendUncertain(ProviderError):
    """The request may have reached the provider (timeout after sending, dropped connection).

    The message row stays ``sending`` so the retry settles it the provider's way.
    """


class EmailChannel(Protocol):
    name: str

    async def send(self, message: OutboundEmail, *, uncertain: bool) -> SendResult:
        """Send once. ``uncertain``: an earlier attempt may have reached the provider; settle it
        (idempotency key, look-up, same Message-ID) and never drop the message for fear of a
        duplicate. Raise ``ProviderError`` (``permanent``/``retry_after``) or ``SendUncertain``."""
        ...


class SmsChannel(Protocol):
    name: str

    async def send(self, message: OutboundSms, *, uncertain: bool) -> SendResult: ...


@dataclass(frozen=True, slots=True)
class WebhookResponse:
    status_code: int
    retry_after: float | None = None
    body: str = ""


class WebhookChannel(Protocol):
    name: str

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
        """POST ``body`` with ``headers``, signed when ``secret`` is not empty, connecting to
        ``connect_to`` (an address the SSRF guard checked) when given; raise ``ProviderError``
        when no HTTP answer came back."""
        ...
