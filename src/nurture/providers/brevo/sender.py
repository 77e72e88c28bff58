"""Brevo transactional e-mail (``POST /v3/smtp/email``) and SMS (``POST /v3/transactionalSMS/sms``).

Our message id travels in ``X-Mailin-custom`` (Brevo echoes it in its webhooks) and in a tag
(which Brevo's e-mail list returns), so a send whose outcome is unknown is looked up before it
is sent again. The ``idempotencyKey`` header covers a quick retry within Brevo's TTL too.
"""

from __future__ import annotations

import uuid
from email.utils import parseaddr
from typing import Any

import httpx
import orjson

from nurture.core.channels import OutboundEmail, OutboundSms, SendResult
from nurture.providers.http import check, request

BREVO_API = "https://api.brevo.com/v3"
MESSAGE_ID_KEY = "nurture_message_id"


def tag_for(message_id: int) -> str:
    return f"nurture-{message_id}"


def idempotency_key(key: str) -> str:
    """Brevo wants a UUID; derive it from the job key so every retry carries the same one."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, "nurture:" + key))


def email_body(message: OutboundEmail) -> dict[str, Any]:
    name, address = parseaddr(message.sender)
    to: dict[str, str] = {"email": message.to}
    if message.to_name:
        to["name"] = message.to_name
    body: dict[str, Any] = {
        "sender": {"email": address or message.sender, **({"name": name} if name else {})},
        "to": [to],
        "headers": {
            **message.headers,
            "X-Mailin-custom": orjson.dumps({MESSAGE_ID_KEY: str(message.message_id)}).decode(),
            "idempotencyKey": idempotency_key(message.key),
        },
        "tags": [tag_for(message.message_id)],
    }
    if message.provider_template is not None:
        body["templateId"] = message.provider_template
        if message.params:
            body["params"] = message.params
        if message.subject:
            body["subject"] = message.subject
    else:
        body["subject"] = message.subject
        if message.html is not None:
            body["htmlContent"] = message.html
        if message.text is not None:
            body["textContent"] = message.text
    return body


class BrevoEmail:
    name = "brevo"

    def __init__(self, api_key: str, client: httpx.AsyncClient, base_url: str = BREVO_API) -> None:
        self.client = client
        self.base_url = base_url.rstrip("/")
        self.headers = {"api-key": api_key, "accept": "application/json"}

    async def send(self, message: OutboundEmail, *, uncertain: bool) -> SendResult:
        if uncertain:
            found = await self.lookup(message)
            if found is not None:
                return SendResult(found, "found_at_provider")
        response = await request(
            self.client,
            "brevo",
            "POST",
            f"{self.base_url}/smtp/email",
            json=email_body(message),
            headers=self.headers,
        )
        check(response, "brevo")
        provider_id = response.json().get("messageId")
        return SendResult(
            str(provider_id) if provider_id else None, "resent_not_found" if uncertain else None
        )

    async def lookup(self, message: OutboundEmail) -> str | None:
        """Brevo's id of the e-mail we tagged with this message id, if Brevo has it."""
        response = await request(
            self.client,
            "brevo",
            "GET",
            f"{self.base_url}/smtp/emails",
            params={"email": message.to, "sort": "desc", "limit": 500},
            headers=self.headers,
        )
        if response.status_code == 404:
            return None
        check(response, "brevo")
        tag = tag_for(message.message_id)
        for item in response.json().get("transactionalEmails") or []:
            if tag in (item.get("tags") or []):
                found = item.get("messageId")
                return str(found) if found else None
        return None


class BrevoSms:
    name = "brevo"

    def __init__(self, api_key: str, client: httpx.AsyncClient, base_url: str = BREVO_API) -> None:
        self.client = client
        self.base_url = base_url.rstrip("/")
        self.headers = {"api-key": api_key, "accept": "application/json"}

    async def send(self, message: OutboundSms, *, uncertain: bool) -> SendResult:
        # Brevo's SMS API has no idempotency key and no look-up by tag: an unknown outcome is
        # resent (a repeated reminder is better than a lost one) and marked so on the row.
        body = {
            "sender": message.sender,
            "recipient": message.to,
            "content": message.text,
            "type": "transactional" if message.transactional else "marketing",
            "tag": tag_for(message.message_id),
            "unicodeEnabled": True,
        }
        response = await request(
            self.client,
            "brevo",
            "POST",
            f"{self.base_url}/transactionalSMS/sms",
            json=body,
            headers=self.headers,
        )
        check(response, "brevo")
        provider_id = response.json().get("messageId")
        return SendResult(
            str(provider_id) if provider_id is not None else None,
            "resent_no_idempotency" if uncertain else None,
        )
