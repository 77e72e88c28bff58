"""Real transports: SMTP against a local aiosmtpd server, outbound webhooks against a local
receiver that verifies with the ``standardwebhooks`` library."""

from __future__ import annotations

import asyncio
import email
import ssl
import threading
from collections.abc import Iterator
from email import policy
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
import trustme
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from standardwebhooks.webhooks import Webhook

from nurture.clock import SystemClock, VirtualClock
from nurture.config import Settings
from nurture.database.engine import Database
from nurture.errors import ProviderError
from nurture.integrations.outbound import Outbound, load_endpoints
from nurture.pack import load_pack
from nurture.providers.http import new_client
from nurture.providers.smtp.sender import SmtpEmail
from nurture.providers.standard import outbound as standard_outbound
from nurture.providers.standard.outbound import WebhookPoster
from nurture.storage import endpoints as endpoint_store
from nurture.storage import messages as message_store
from nurture.testing import HookRecorder, free_port, new_secret, serve
from tests.helpers import Job, email_job, make_delivery, new_contact


class Inbox:
    def __init__(self) -> None:
        self.messages: list[tuple[str, list[str], bytes]] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append((envelope.mail_from, list(envelope.rcpt_tos), envelope.content))
        return "250 OK"


def authenticate(server: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> AuthResult:
    ok = isinstance(data, LoginPassword) and (data.login, data.password) == (b"mailer", b"s3cr%t")
    return AuthResult(success=ok, handled=False)


@pytest.fixture
def smtp_server() -> Iterator[tuple[int, Inbox]]:
    inbox = Inbox()
    port = free_port()
    controller = Controller(
        inbox,
        hostname="127.0.0.1",
        port=port,
        authenticator=authenticate,
        auth_require_tls=False,
    )
    controller.start()
    try:
        yield port, inbox
    finally:
        controller.stop()


def test_smtp_end_to_end_mime_and_headers(
    db: Database, clock: VirtualClock, smtp_server: tuple[int, Inbox]
) -> None:
    port, inbox = smtp_server
    channel = SmtpEmail(f"smtp://mailer:s3cr%25t@127.0.0.1:{port}", clock, timeout=10)
    delivery = make_delivery(db, clock, channel)
    cid = new_contact(db, clock, email="zoe@example.com", first_name="Zoé")
    job = email_job(cid, template="vip_offer")
    asyncio.run(delivery.send_email(job))
    asyncio.run(delivery.send_email(job))  # settled: no second message
    [(mail_from, rcpts, raw)] = inbox.messages
    assert mail_from == "shop@example.com" and rcpts == ["zoe@example.com"]
    header_block = raw.split(b"\r\n\r\n", 1)[0]
    header_block.decode("ascii")  # the non-ASCII subject and name are RFC 2047-encoded
    assert b"Subject: Offre VIP exclusive pour =?utf-8?" in header_block
    msg = email.message_from_bytes(raw, policy=policy.default)
    assert isinstance(msg, EmailMessage)
    assert msg["Subject"] == "Offre VIP exclusive pour Zoé"
    assert msg.get_content_type() == "multipart/alternative"
    text, html = list(msg.iter_parts())
    assert text.get_content_type() == "text/plain" and "Cher·e Zoé" in text.get_content()
    assert html.get_content_type() == "text/html" and "<strong>15&nbsp;%" in html.get_content()
    assert msg["List-Unsubscribe"].startswith("<https://nurture.example.com/u/")
    assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    with db.read() as conn:
        row = message_store.get_by_key(conn, job.key)
    assert row is not None and row["provider_message_id"] == msg["Message-ID"]
    assert row["status"] == "sent"
    channel.close()  # the pooled connection


def test_smtp_resend_after_crash_keeps_the_message_id(
    db: Database, clock: VirtualClock, smtp_server: tuple[int, Inbox]
) -> None:
    port, inbox = smtp_server
    channel = SmtpEmail(f"smtp://mailer:s3cr%25t@127.0.0.1:{port}", clock, timeout=10)
    delivery = make_delivery(db, clock, channel)
    job = email_job(new_contact(db, clock))
    asyncio.run(delivery.send_email(job))
    with db.begin() as conn:  # as if the worker died after the send, before recording it
        row = message_store.get_by_key(conn, job.key)
        assert row is not None
        message_store.fail(conn, row["id"], "sending", "worker lost", clock.now())
    asyncio.run(delivery.send_email(Job(job.key, job.payload, attempt=2)))
    ids = {email.message_from_bytes(raw)["Message-ID"] for _, _, raw in inbox.messages}
    assert len(inbox.messages) == 2 and len(ids) == 1
    with db.read() as conn:
        assert message_store.get_by_key(conn, job.key)["settled"] == "resent_same_message_id"  # type: ignore[index]
    channel.close()


def test_smtp_refused_login_is_permanent(
    db: Database, clock: VirtualClock, smtp_server: tuple[int, Inbox]
) -> None:
    port, inbox = smtp_server
    delivery = make_delivery(
        db, clock, SmtpEmail(f"smtp://mailer:wrong@127.0.0.1:{port}", clock, timeout=10)
    )
    job = email_job(new_contact(db, clock))
    with pytest.raises(ProviderError, match="authentication refused") as info:
        asyncio.run(delivery.send_email(job))
    assert info.value.permanent and inbox.messages == []
    closed = SmtpEmail(f"smtp://127.0.0.1:{free_port()}", clock, timeout=2)
    with pytest.raises(ProviderError, match="cannot connect") as down:
        asyncio.run(make_delivery(db, clock, closed).send_email(email_job(1, key="other")))
    assert not down.value.permanent


# -- outbound webhooks ------------------------------------------------------------------------


class Receiver:
    """A flow endpoint: verifies each request with the standardwebhooks library."""

    def __init__(self, secret: str) -> None:
        self.secret = secret
        self.statuses: list[int] = []
        self.received: list[dict[str, Any]] = []
        handler = self._handler()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["content-length"]))
                headers = {k.lower(): v for k, v in self.headers.items()}
                payload = Webhook(receiver.secret).verify(body, headers)
                receiver.received.append({"headers": headers, "payload": payload})
                status = receiver.statuses.pop(0) if receiver.statuses else 204
                self.send_response(status)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        return Handler

    def __enter__(self) -> Receiver:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


def outbound_for(db: Database, tmp_path: Path, url: str, secret: str, **extra: str) -> Outbound:
    lines = [
        "endpoints:",
        "  - name: flow",
        f"    url: {url}",
        f"    secret: {secret}",
        "    events: [task.created]",
        *[f"    {k}: {v}" for k, v in extra.items()],
    ]
    (tmp_path / "endpoints.yaml").write_text("\n".join(lines) + "\n", encoding="utf-8")
    pack = load_pack(tmp_path)
    endpoints = load_endpoints(pack, Settings())
    from nurture.messaging.templates import template_store

    return Outbound(
        db, SystemClock(), template_store(pack), WebhookPoster(new_client(5.0)), endpoints
    )


def run(outbound: Outbound, job: Job) -> None:
    async def go() -> None:
        try:
            await outbound.send_webhook(job)
        finally:
            await outbound.channel.client.aclose()  # type: ignore[attr-defined]

    asyncio.run(go())


def test_webhook_is_signed_verified_and_keeps_its_id_across_retries(
    db: Database, tmp_path: Path
) -> None:
    secret = new_secret()
    with Receiver(secret) as receiver:
        receiver.statuses = [503]
        cid = new_contact(db, SystemClock())
        outbound = outbound_for(
            db,
            tmp_path,
            receiver.url,
            secret,
            allow_private="true",
            payload="{email: '{{ contact.email }}', who: '{{ contact.first_name }}'}",
        )
        job = Job("rule:9:vip:1", {"endpoint": "flow", "contact_id": cid, "rule_id": "vip"})
        with pytest.raises(ProviderError) as first:
            run(outbound, job)
        assert not first.value.permanent
        outbound = outbound_for(
            db,
            tmp_path,
            receiver.url,
            secret,
            allow_private="true",
            payload="{email: '{{ contact.email }}', who: '{{ contact.first_name }}'}",
        )
        run(outbound, Job(job.key, job.payload, attempt=2))
    first_req, second_req = receiver.received
    assert first_req["headers"]["webhook-id"] == second_req["headers"]["webhook-id"]
    assert second_req["payload"] == {
        "type": "nurture.webhook",
        "timestamp": second_req["payload"]["timestamp"],
        "data": {"email": "ann@example.com", "who": "Ann"},
    }
    with db.read() as conn:
        log = endpoint_store.deliveries_for(conn, "flow")
    assert [(d["attempt"], d["status_code"]) for d in log] == [(2, 204), (1, 503)]


def test_webhook_410_disables_the_endpoint(db: Database, tmp_path: Path) -> None:
    secret = new_secret()
    with Receiver(secret) as receiver:
        receiver.statuses = [410]
        outbound = outbound_for(db, tmp_path, receiver.url, secret, allow_private="true")
        job = Job("task:1", {"endpoint": "flow", "type": "task.created", "body": {"title": "Call"}})
        with pytest.raises(ProviderError, match="410") as gone:
            run(outbound, job)
        assert gone.value.permanent
        outbound = outbound_for(db, tmp_path, receiver.url, secret, allow_private="true")
        with pytest.raises(ProviderError, match="disabled") as disabled:
            run(outbound, Job("task:2", job.payload))
        assert disabled.value.permanent
    assert len(receiver.received) == 1
    assert receiver.received[0]["payload"]["data"] == {"title": "Call"}
    assert outbound.subscribers("task.created") == ["flow"]


def test_webhook_to_loopback_is_refused_unless_allowed(db: Database, tmp_path: Path) -> None:
    secret = new_secret()
    with Receiver(secret) as receiver:
        outbound = outbound_for(db, tmp_path, receiver.url, secret)
        with pytest.raises(ProviderError, match="private or loopback") as refused:
            run(outbound, Job("x:1", {"endpoint": "flow", "body": {}}))
        assert refused.value.permanent
    assert receiver.received == []
    with db.read() as conn:
        [entry] = endpoint_store.deliveries_for(conn, "flow")
    assert entry["status_code"] is None and "loopback" in entry["error"]


def test_the_request_connects_to_the_address_the_guard_checked(
    db: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """DNS rebinding: the name is resolved once, by the guard, and the request connects to
    that address with the URL's Host and TLS server name. ``hooks.example.test`` resolves
    nowhere but through the guard (to the local HTTPS server, taken as public here), so the
    delivery only arrives, with a verified certificate for the name, if the address is pinned."""
    authority = trustme.CA()
    pem = tmp_path / "server.pem"
    authority.issue_cert("hooks.example.test").private_key_and_cert_chain_pem.write_to_path(
        str(pem)
    )
    trust = ssl.create_default_context()
    authority.configure_trust(trust)
    looked_up: list[str] = []

    async def fake_resolve(host: str, port: int) -> list[str]:
        looked_up.append(host)
        return ["127.0.0.1"]

    monkeypatch.setattr(standard_outbound, "resolve", fake_resolve)
    monkeypatch.setattr(standard_outbound, "_is_public", lambda address: True)
    recorder = HookRecorder(ok_status=204)
    with serve(recorder.app(), tls_pem=str(pem)) as base:
        port = urlsplit(base).port
        lines = [
            "endpoints:",
            "  - name: flow",
            "    kind: json",
            f"    url: https://hooks.example.test:{port}/hook?sig=abc",
        ]
        (tmp_path / "endpoints.yaml").write_text("\n".join(lines) + "\n", encoding="utf-8")
        pack = load_pack(tmp_path)
        from nurture.messaging.templates import template_store

        client = httpx.AsyncClient(verify=trust)
        outbound = Outbound(
            db,
            SystemClock(),
            template_store(pack),
            WebhookPoster(client),
            load_endpoints(pack, Settings()),
        )
        run(outbound, Job("x:1", {"endpoint": "flow", "body": {"ok": True}}))
    [request] = recorder.requests
    assert looked_up == ["hooks.example.test"]
    assert request.headers["host"] == f"hooks.example.test:{port}"
    assert request.path == "/hook" and request.body == {"ok": True}
