"""Resend (``POST /emails``, ``POST /emails/batch``). The ``Idempotency-Key`` makes a retry after
an unknown outcome safe: Resend answers with the first result instead of sending again.

A batch (up to 100 e-mails) is one request with one key, so its exact body is stored
(``message_batches``) until its members are settled: a batch whose answer was lost is replayed
byte for byte under the same key. ``x-batch-validation: permissive`` makes Resend send the valid
e-mails of a batch and report the invalid ones by index (the default, strict, refuses the whole
batch for one bad address).
"""

from __future__ import annotations

import hashlib
from collections.abc import Hashable, Sequence
from typing import Any

import httpx
import orjson

from nurture.core.channels import (
    BatchOutcome,
    BatchRequest,
    OutboundEmail,
    SendResult,
    SendUncertain,
)
from nurture.errors import ProviderError
from nurture.providers.http import check, request, retry_after

RESEND_API = "https://api.resend.com"
BATCH_LIMIT = 100  # e-mails per /emails/batch request (Resend's documented maximum)
MESSAGE_ID_TAG = "nurture_message_id"


def idempotency_key(message: OutboundEmail) -> str:
    return f"nurture-{message.message_id}-{hashlib.sha256(message.key.encode()).hexdigest()[:16]}"


def email_body(message: OutboundEmail) -> dict[str, Any]:
    to = f"{message.to_name} <{message.to}>" if message.to_name else message.to
    body: dict[str, Any] = {
        "from": message.sender,
        "to": [to],
        "subject": message.subject,
        "tags": [{"name": MESSAGE_ID_TAG, "value": str(message.message_id)}],
    }
    if message.html is not None:
        body["html"] = message.html
    if message.text is not None:
        body["text"] = message.text
    if message.headers:
        body["headers"] = dict(message.headers)
    return body


def batch_key(messages: Sequence[OutboundEmail]) -> str:
    """One batch's ``Idempotency-Key``: message ids are never reused, so neither is this."""
    digest = hashlib.sha256("\n".join(m.key for m in messages).encode()).hexdigest()[:16]
    return f"nurture-batch-{messages[0].message_id}-{len(messages)}-{digest}"


class ResendEmail:
    name = "resend"
    batch_size = BATCH_LIMIT
    replays_batches = True

    def __init__(self, api_key: str, client: httpx.AsyncClient, base_url: str = RESEND_API) -> None:
        self.client = client
        self.base_url = base_url.rstrip("/")
        self.api_key = api_key

    async def send(self, message: OutboundEmail, *, uncertain: bool) -> SendResult:
        if message.provider_template is not None:
            raise ProviderError(
                "resend: provider-side templates are a Brevo feature; give the template "
                "subject.txt and body.html",
                permanent=True,
            )
        response = await request(
            self.client,
            "resend",
            "POST",
            f"{self.base_url}/emails",
            json=email_body(message),
            headers={
                "authorization": f"Bearer {self.api_key}",
                "idempotency-key": idempotency_key(message),
            },
        )
        settled = "idempotency_key" if uncertain else None
        if response.status_code == 409:
            name = _error_name(response)
            if name == "concurrent_idempotent_requests":
                raise ProviderError(
                    "resend: the same send is in flight", retry_after=retry_after(response) or 1.0
                )
            if uncertain and name == "invalid_idempotent_request":
                # The key was used by the earlier attempt (so Resend accepted it) and the
                # re-rendered payload differs: the e-mail went out; its id is not returned.
                return SendResult(None, "idempotency_key_conflict")
        check(response, "resend")
        return SendResult(str(response.json().get("id") or "") or None, settled)

    def batch_group(self, message: OutboundEmail) -> Hashable | None:
        # A provider template is refused by ``send`` with a clear error; keep it out of batches.
        return None if message.provider_template is not None else "resend"

    def batch_request(self, messages: Sequence[OutboundEmail]) -> BatchRequest:
        body = orjson.dumps([email_body(m) for m in messages])
        return BatchRequest(
            batch_key(messages), tuple(m.message_id for m in messages), body, tuple(messages)
        )

    async def send_batch(self, batch: BatchRequest, *, replay: bool) -> list[BatchOutcome]:
        response = await request(
            self.client,
            "resend",
            "POST",
            f"{self.base_url}/emails/batch",
            content=batch.body,
            headers={
                "authorization": f"Bearer {self.api_key}",
                "content-type": "application/json",
                "idempotency-key": batch.key,
                "x-batch-validation": "permissive",
            },
        )
        settled = "idempotency_key" if replay else None
        count = len(batch.message_ids)
        if response.status_code == 409:
            name = _error_name(response)
            if name == "concurrent_idempotent_requests":
                raise ProviderError(
                    "resend: the same batch is in flight", retry_after=retry_after(response) or 1.0
                )
            if replay and name == "invalid_idempotent_request":
                # The key was used (so Resend took that batch) with another body: the e-mails
                # went out; their ids are not returned.
                return [SendResult(None, "idempotency_key_conflict")] * count
        check(response, "resend")
        return _batch_outcomes(response, count, settled)


def _batch_outcomes(
    response: httpx.Response, count: int, settled: str | None
) -> list[BatchOutcome]:
    """``{"data": [{"id"}...], "errors": [{"index", "message"}...]}``: in permissive mode
    ``data`` lists the accepted e-mails in request order, skipping the refused indexes."""
    try:
        answer = response.json()
        ids = [str(item["id"]) for item in answer.get("data") or []]
        refused = {
            int(e["index"]): str(e.get("message") or "refused") for e in answer.get("errors") or []
        }
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise SendUncertain(f"resend: unreadable batch answer: {response.text[:300]!r}") from exc
    if len(ids) + len(refused) != count or any(not 0 <= i < count for i in refused):
        # Accepted, but which item is which cannot be told: settle as an unknown outcome.
        raise SendUncertain(
            f"resend: batch answer has {len(ids)} ids and {len(refused)} errors for {count} e-mails"
        )
    accepted = iter(ids)
    out: list[BatchOutcome] = []
    for index in range(count):
        if index in refused:
            out.append(ProviderError(f"resend: refused: {refused[index]}", permanent=True))
        else:
            out.append(SendResult(next(accepted), settled))
    return out


def _error_name(response: httpx.Response) -> str:
    try:
        data = response.json()
    except ValueError:
        return ""
    return str(data.get("name") or "") if isinstance(data, dict) else ""
