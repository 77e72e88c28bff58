"""Resend (``POST /emails``). The ``Idempotency-Key`` (derived from our message) makes a retry
after an unknown outcome safe: Resend answers with the first send instead of sending again."""

from __future__ import annotations

import hashlib
from typing import Any

import httpx

from nurture.core.channels import OutboundEmail, SendResult
from nurture.errors import ProviderError
from nurture.providers.http import check, request, retry_after

RESEND_API = "https://api.resend.com"
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


class ResendEmail:
    name = "resend"

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


def _error_name(response: httpx.Response) -> str:
    try:
        data = response.json()
    except ValueError:
        return ""
    return str(data.get("name") or "") if isinstance(data, dict) else ""
