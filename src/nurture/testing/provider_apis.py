"""Fakes of the Brevo and Resend transactional e-mail APIs, for ``httpx.MockTransport``.

Each checks every request against the provider's documented API (path, auth header, body
fields; ``docs/providers.md``) and keeps the e-mails it "accepted", so tests count real sends,
not calls. ``script`` queues what the next POSTs get: ``"ok"``, an ``httpx.Response`` to answer
with, or ``"accept-then-timeout"`` (the provider takes the e-mail, the answer never arrives).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson

Action = str | httpx.Response


@dataclass
class FakeBrevo:
    api_key: str = "bk_test"
    script: list[Action] = field(default_factory=list)
    accepted: list[dict[str, Any]] = field(default_factory=list)
    requests: list[httpx.Request] = field(default_factory=list)

    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self.handle)

    def handle(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        assert request.url.host == "api.brevo.com"
        assert request.headers["api-key"] == self.api_key
        if request.method == "POST" and request.url.path == "/v3/smtp/email":
            body = orjson.loads(request.content)
            assert request.headers["content-type"] == "application/json"
            assert body["sender"]["email"] and body["to"][0]["email"]
            assert body.get("subject") and ("htmlContent" in body or "templateId" in body)
            action = self.script.pop(0) if self.script else "ok"
            if isinstance(action, httpx.Response):
                return action
            self.accepted.append(body)
            if action == "accept-then-timeout":
                raise httpx.ReadTimeout("timed out", request=request)
            return httpx.Response(
                201, json={"messageId": f"<{len(self.accepted)}@smtp-relay.mailin.fr>"}
            )
        if request.method == "GET" and request.url.path == "/v3/smtp/emails":
            to = request.url.params["email"]
            emails = [
                {
                    "email": to,
                    "subject": b["subject"],
                    "messageId": f"<{i + 1}@smtp-relay.mailin.fr>",
                    "uuid": f"uuid-{i}",
                    "date": "2026-11-23T09:00:00.000+01:00",
                    "tags": b.get("tags", []),
                }
                for i, b in enumerate(self.accepted)
                if b["to"][0]["email"] == to
            ]
            if not emails:
                return httpx.Response(404, json={"code": "document_not_found", "message": "none"})
            return httpx.Response(200, json={"count": len(emails), "transactionalEmails": emails})
        raise AssertionError(f"unexpected request {request.method} {request.url}")


@dataclass
class FakeResend:
    api_key: str = "re_test"
    script: list[Action] = field(default_factory=list)
    accepted: list[dict[str, Any]] = field(default_factory=list)
    requests: list[httpx.Request] = field(default_factory=list)
    by_key: dict[str, str] = field(default_factory=dict)
    on_request: Callable[[httpx.Request], None] | None = None

    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self.handle)

    def handle(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        assert request.method == "POST" and request.url == "https://api.resend.com/emails"
        assert request.headers["authorization"] == f"Bearer {self.api_key}"
        key = request.headers["idempotency-key"]
        assert 0 < len(key) <= 256
        body = orjson.loads(request.content)
        assert body["from"] and body["to"] and body["subject"] and body.get("html")
        action = self.script.pop(0) if self.script else "ok"
        if isinstance(action, httpx.Response):
            return action
        if key in self.by_key:  # Resend answers a repeated key with the first result
            return httpx.Response(200, json={"id": self.by_key[key]})
        self.accepted.append(body)
        self.by_key[key] = f"re_{len(self.accepted)}"
        if action == "accept-then-timeout":
            raise httpx.ReadTimeout("timed out", request=request)
        return httpx.Response(200, json={"id": self.by_key[key]})
