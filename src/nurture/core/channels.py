"""Outbound channel ports: what a sender gets, what it returns, how it reports failure.

Each provider (``providers/<vendor>/sender.py``) implements one of these; the recording fakes
live in ``nurture.providers.recording``.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

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


@dataclass(frozen=True, slots=True)
class BatchRequest:
    """One provider request carrying several e-mails: exactly what is sent, so that a request
    whose answer was lost can be replayed byte for byte under the same idempotency key.

    Item ``i`` of the answer belongs to ``message_ids[i]``."""

    key: str
    message_ids: tuple[int, ...]
    body: bytes
    # The members themselves, when the request was built in this process (not stored: a
    # replayed request has only its body). A provider that refuses a whole request for one bad
    # member (Brevo) sends them one by one instead.
    messages: tuple[OutboundEmail, ...] = field(default=(), compare=False, repr=False)


# What a batch send returns per member, in ``message_ids`` order.
BatchOutcome = SendResult | ProviderError


@runtime_checkable
class BatchEmailChannel(Protocol):
    """An e-mail channel with a provider batch API (Resend ``/emails/batch``, Brevo
    ``messageVersions``). Members of one request share ``batch_group``; ``None`` means the
    message must go alone (through ``send``)."""

    name: str
    batch_size: int
    # True: an unknown outcome is settled by replaying the stored request (idempotency key per
    # request: Resend). False: members are settled one by one through ``send(uncertain=True)``
    # (a look-up by our tag: Brevo), so the request need not be kept.
    replays_batches: bool

    async def send(self, message: OutboundEmail, *, uncertain: bool) -> SendResult: ...

    def batch_group(self, message: OutboundEmail) -> Hashable | None: ...

    def batch_request(self, messages: Sequence[OutboundEmail]) -> BatchRequest: ...

    async def send_batch(self, request: BatchRequest, *, replay: bool) -> list[BatchOutcome]:
        """Send the request. A failure of the whole request raises (``ProviderError`` /
        ``SendUncertain``); otherwise one outcome per member: its ``SendResult``, or the
        ``ProviderError`` the provider gave that member alone."""
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
