"""Fakes of the Brevo and Resend transactional e-mail APIs, for ``httpx.MockTransport``.

Each checks every request against the provider's documented API (path, auth header, body
fields; ``docs/providers.md``) and keeps the e-mails it "accepted", so tests count real sends,
not calls. ``script`` queues what the next POSTs get: ``"ok"``, an ``httpx.Response`` to answer
with, or ``"accept-then-timeout"`` (the provider takes the e-mail, the answer never arrives).
``refuse`` holds addresses the provider rejects as invalid: Resend's permissive batch reports
them by index and sends the rest; Brevo refuses the whole request (400) and sends nothing.

Batch shapes: Resend ``POST /emails/batch`` takes a JSON array of at most 100 e-mails and answers
``{"data": [{"id"}...]}`` (permissive validation: the accepted ones, in order, and ``"errors":
[{"index", "message"}]``); its ``Idempotency-Key`` covers the whole request (the same key and
body: the first answer again; the same key and another body: 409
``invalid_idempotent_request``). Brevo ``POST /v3/smtp/email`` with ``messageVersions`` answers
``{"messageIds": [...]}``, one per version, in order.
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
    refuse: set[str] = field(default_factory=set)

    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self.handle)

    def handle(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        assert request.url.host == "api.brevo.com"
        assert request.headers["api-key"] == self.api_key
        if request.method == "POST" and request.url.path == "/v3/smtp/email":
            body = orjson.loads(request.content)
            assert request.headers["content-type"] == "application/json"
            versions = body.get("messageVersions")
            assert body["sender"]["email"]
            assert body.get("subject") and ("htmlContent" in body or "templateId" in body)
            if versions is None:
                emails = [body]
            else:
                assert "to" not in body and 0 < len(versions) <= 1000
                emails = []
                for version in versions:
                    assert version["to"][0]["email"]
                    merged = {k: v for k, v in body.items() if k != "messageVersions"}
                    emails.append({**merged, **version})
            assert all(e["to"][0]["email"] for e in emails)
            action = self.script.pop(0) if self.script else "ok"
            if isinstance(action, httpx.Response):
                return action
            bad = [e["to"][0]["email"] for e in emails if e["to"][0]["email"] in self.refuse]
            if bad:  # Brevo validates the request as a whole: nothing is sent
                return httpx.Response(
                    400,
                    json={"code": "invalid_parameter", "message": f"email is not valid: {bad[0]}"},
                )
            ids = []
            for e in emails:
                self.accepted.append(e)
                ids.append(f"<{len(self.accepted)}@smtp-relay.mailin.fr>")
            if action == "accept-then-timeout":
                raise httpx.ReadTimeout("timed out", request=request)
            if versions is None:
                return httpx.Response(201, json={"messageId": ids[0]})
            return httpx.Response(201, json={"messageIds": ids})
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
    refuse: set[str] = field(default_factory=set)
    # Idempotency-Key of a batch -> (its body, its answer)
    batches: dict[str, tuple[bytes, dict[str, Any]]] = field(default_factory=dict)

    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self.handle)

    def handle(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        assert request.method == "POST"
        assert request.headers["authorization"] == f"Bearer {self.api_key}"
        key = request.headers["idempotency-key"]
        assert 0 < len(key) <= 256
        if request.url == "https://api.resend.com/emails/batch":
            return self._batch(request, key)
        assert request.url == "https://api.resend.com/emails"
        body = orjson.loads(request.content)
        _check_email(body)
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

    def _batch(self, request: httpx.Request, key: str) -> httpx.Response:
        items = orjson.loads(request.content)
        assert isinstance(items, list) and 0 < len(items) <= 100
        for item in items:
            _check_email(item)
        action = self.script.pop(0) if self.script else "ok"
        if isinstance(action, httpx.Response):
            return action
        seen = self.batches.get(key)
        if seen is not None:
            if seen[0] != request.content:
                return httpx.Response(
                    409,
                    json={
                        "statusCode": 409,
                        "name": "invalid_idempotent_request",
                        "message": "Same idempotency key used with a different request payload.",
                    },
                )
            return httpx.Response(200, json=seen[1])
        permissive = request.headers.get("x-batch-validation") == "permissive"
        refused = [i for i, item in enumerate(items) if _address(item["to"][0]) in self.refuse]
        if refused and not permissive:  # strict (the default): the whole batch is refused
            return httpx.Response(
                422, json={"statusCode": 422, "name": "validation_error", "message": "invalid `to`"}
            )
        answer: dict[str, Any] = {"data": []}
        for i, item in enumerate(items):
            if i in refused:
                continue
            self.accepted.append(item)
            answer["data"].append({"id": f"re_{len(self.accepted)}"})
        if permissive:
            answer["errors"] = [
                {"index": i, "message": "Invalid `to` field. The email address is not valid."}
                for i in refused
            ]
        self.batches[key] = (request.content, answer)
        if action == "accept-then-timeout":
            raise httpx.ReadTimeout("timed out", request=request)
        return httpx.Response(200, json=answer)


def _check_email(body: dict[str, Any]) -> None:
    assert body["from"] and body["to"] and body["subject"] and body.get("html")


def _address(to: str) -> str:
    return to.rsplit("<", 1)[-1].rstrip(">") if "<" in to else to
