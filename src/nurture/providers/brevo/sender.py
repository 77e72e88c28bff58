"""Brevo transactional e-mail (``POST /v3/smtp/email``) and SMS (``POST /v3/transactionalSMS/sms``).

Our message id travels in ``X-Mailin-custom`` (Brevo echoes it in its webhooks) and in a tag
(which Brevo's e-mail list returns), so a send whose outcome is unknown is looked up before it
is sent again. The ``idempotencyKey`` header covers a quick retry within Brevo's TTL too.

Several e-mails that share their request-level fields (sender, headers, Brevo template) go as
one request with ``messageVersions`` (one version per recipient: its own subject, content or
params); Brevo answers ``messageIds`` in version order. Headers are request-level in that API,
so marketing e-mails, whose ``List-Unsubscribe`` differs per contact, go one request each. Every
version carries every member's ``nurture-<id>`` tag, so the look-up by recipient and tag that
settles an unknown outcome finds a batched e-mail too. Brevo validates a request as a whole: one
refused address (400) fails the request with nothing sent, and its members are then sent one by
one, so the others still go and only the bad one fails.
"""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from collections.abc import Hashable, Sequence
from email.utils import parseaddr
from typing import Any

import httpx
import orjson

from nurture.core.channels import (
    BatchOutcome,
    BatchRequest,
    OutboundEmail,
    OutboundSms,
    SendResult,
    SendUncertain,
)
from nurture.errors import ProviderError
from nurture.providers.http import check, request

BREVO_API = "https://api.brevo.com/v3"
MESSAGE_ID_KEY = "nurture_message_id"
BATCH_LIMIT = 100  # versions per request (Brevo accepts more; a failed batch is resent singly)


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


def _version(message: OutboundEmail) -> dict[str, Any]:
    to: dict[str, str] = {"email": message.to}
    if message.to_name:
        to["name"] = message.to_name
    version: dict[str, Any] = {"to": [to]}
    if message.subject:
        version["subject"] = message.subject
    if message.provider_template is not None:
        if message.params:
            version["params"] = message.params
        return version
    if message.html is not None:
        version["htmlContent"] = message.html
    if message.text is not None:
        version["textContent"] = message.text
    return version


def batch_body(messages: Sequence[OutboundEmail]) -> dict[str, Any]:
    """One ``POST /v3/smtp/email`` for messages of one ``batch_group``: the first message's
    fields at the top (Brevo requires them), every message as a version."""
    first = messages[0]
    body = email_body(first)
    del body["to"]
    body.pop("params", None)
    key = "nurture-batch:" + hashlib.sha256("\n".join(m.key for m in messages).encode()).hexdigest()
    body["headers"] = {**first.headers, "idempotencyKey": idempotency_key(key)}
    body["tags"] = [tag_for(m.message_id) for m in messages]
    body["messageVersions"] = [_version(m) for m in messages]
    return body


class BrevoEmail:
    name = "brevo"
    batch_size = BATCH_LIMIT
    replays_batches = False

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

    def batch_group(self, message: OutboundEmail) -> Hashable | None:
        return (
            message.sender,
            tuple(sorted(message.headers.items())),
            message.provider_template,
            message.html is None,
            message.text is None,
        )

    def batch_request(self, messages: Sequence[OutboundEmail]) -> BatchRequest:
        body = batch_body(messages)
        return BatchRequest(
            body["headers"]["idempotencyKey"],
            tuple(m.message_id for m in messages),
            orjson.dumps(body),
            tuple(messages),
        )

    async def send_batch(self, batch: BatchRequest, *, replay: bool) -> list[BatchOutcome]:
        response = await request(
            self.client,
            "brevo",
            "POST",
            f"{self.base_url}/smtp/email",
            content=batch.body,
            headers={**self.headers, "content-type": "application/json"},
        )
        if response.status_code == 400 and batch.messages:
            # Refused as a whole (one bad address is enough), so nothing was sent: each member
            # on its own, so that only the bad one fails.
            return await self._one_by_one(batch.messages)
        check(response, "brevo")
        try:
            ids = [str(i) for i in response.json()["messageIds"]]
        except (ValueError, KeyError, TypeError) as exc:
            raise SendUncertain(f"brevo: unreadable batch answer: {response.text[:300]!r}") from exc
        if len(ids) != len(batch.message_ids):
            raise SendUncertain(
                f"brevo: {len(ids)} message ids for {len(batch.message_ids)} versions"
            )
        return [SendResult(i) for i in ids]

    async def _one_by_one(self, messages: Sequence[OutboundEmail]) -> list[BatchOutcome]:
        async def one(message: OutboundEmail) -> BatchOutcome:
            try:
                return await self.send(message, uncertain=False)
            except ProviderError as exc:
                return exc

        return list(await asyncio.gather(*(one(m) for m in messages)))

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
