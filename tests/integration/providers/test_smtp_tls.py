"""SMTP over TLS against aiosmtpd with a certificate from a throw-away CA (trustme).

STARTTLS (the server requires it before AUTH and MAIL) and ``smtps://`` (implicit TLS) deliver
when ``NURTURE_SMTP_CA_FILE`` trusts that CA; with the default trust store the same servers are
refused as untrusted, permanently: the test CA never weakens what production accepts.
"""

from __future__ import annotations

import asyncio
import email
import ssl
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import trustme
from aiosmtpd.controller import Controller

from nurture.bootstrap.delivery import build_delivery
from nurture.clock import VirtualClock
from nurture.config import Settings
from nurture.database.engine import Database
from nurture.errors import ConfigError, ProviderError
from nurture.providers.smtp.sender import SmtpEmail
from nurture.storage import messages as message_store
from nurture.testing import free_port
from tests.helpers import default_pack, email_job, make_delivery, new_contact
from tests.integration.providers.test_transports import authenticate


class TlsInbox:
    """Keeps each message with whether its session was encrypted when DATA arrived."""

    def __init__(self) -> None:
        self.messages: list[tuple[bytes, bool]] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        encrypted = server.transport.get_extra_info("ssl_object") is not None
        self.messages.append((envelope.content, encrypted))
        return "250 OK"


@dataclass
class TlsServer:
    port: int
    inbox: TlsInbox
    ca_file: Path


@pytest.fixture
def ca(tmp_path: Path) -> tuple[trustme.CA, Path]:
    authority = trustme.CA()
    path = tmp_path / "test-ca.pem"
    authority.cert_pem.write_to_path(str(path))
    return authority, path


def server_context(authority: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    authority.issue_cert("127.0.0.1").configure_cert(context)
    return context


@pytest.fixture
def starttls_server(ca: tuple[trustme.CA, Path]) -> Iterator[TlsServer]:
    inbox, port = TlsInbox(), free_port()
    controller = Controller(
        inbox,
        hostname="127.0.0.1",
        port=port,
        tls_context=server_context(ca[0]),
        require_starttls=True,  # no AUTH, no MAIL before the session is encrypted
        authenticator=authenticate,
    )
    controller.start()
    try:
        yield TlsServer(port, inbox, ca[1])
    finally:
        controller.stop()


@pytest.fixture
def smtps_server(ca: tuple[trustme.CA, Path]) -> Iterator[TlsServer]:
    inbox, port = TlsInbox(), free_port()
    controller = Controller(
        inbox,
        hostname="127.0.0.1",
        port=port,
        ssl_context=server_context(ca[0]),
        authenticator=authenticate,
        # aiosmtpd counts only STARTTLS as TLS for AUTH; this socket is TLS from the start.
        auth_require_tls=False,
    )
    controller.start()
    try:
        yield TlsServer(port, inbox, ca[1])
    finally:
        controller.stop()


def send_through_settings(
    db: Database, clock: VirtualClock, settings: Settings, key: str
) -> dict[str, Any]:
    services = build_delivery(settings, db, clock, pack=default_pack())
    job = email_job(new_contact(db, clock, email=f"{key}@example.com"), key=key)

    async def go() -> None:
        try:
            await services.delivery.send_email(job)
        finally:
            await services.aclose()

    asyncio.run(go())
    with db.read() as conn:
        row = message_store.get_by_key(conn, key)
    assert row is not None
    return row


@pytest.mark.parametrize("scheme", ["smtp", "smtps"])
def test_tls_delivers_when_the_ca_is_trusted(
    db: Database,
    clock: VirtualClock,
    make_settings: Callable[..., Settings],
    request: pytest.FixtureRequest,
    scheme: str,
) -> None:
    server: TlsServer = request.getfixturevalue(
        "starttls_server" if scheme == "smtp" else "smtps_server"
    )
    settings = make_settings(
        email_provider="smtp",
        smtp_url=f"{scheme}://mailer:s3cr%25t@127.0.0.1:{server.port}",
        smtp_ca_file=server.ca_file,
        secret_key="k",
        email_from="Shop <shop@example.com>",
    )
    row = send_through_settings(db, clock, settings, "tls")
    [(raw, encrypted)] = server.inbox.messages
    assert encrypted
    msg = email.message_from_bytes(raw)
    assert msg["To"] == "Ann <tls@example.com>" and msg["Message-ID"] == row["provider_message_id"]
    assert row["status"] == "sent"


@pytest.mark.parametrize("scheme", ["smtp", "smtps"])
def test_an_untrusted_certificate_is_refused_for_good(
    db: Database, clock: VirtualClock, request: pytest.FixtureRequest, scheme: str
) -> None:
    server: TlsServer = request.getfixturevalue(
        "starttls_server" if scheme == "smtp" else "smtps_server"
    )
    channel = SmtpEmail(f"{scheme}://mailer:s3cr%25t@127.0.0.1:{server.port}", clock, timeout=10)
    delivery = make_delivery(db, clock, channel)
    job = email_job(new_contact(db, clock))
    with pytest.raises(ProviderError, match="certificate we do not trust") as refused:
        asyncio.run(delivery.send_email(job))
    assert refused.value.permanent
    assert server.inbox.messages == []
    with db.read() as conn:
        row = message_store.get_by_key(conn, job.key)
    assert row is not None and row["status"] == "failed"  # known not sent


def test_a_missing_ca_file_is_a_start_up_error(
    db: Database, clock: VirtualClock, make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    settings = make_settings(
        email_provider="smtp",
        smtp_url="smtp://127.0.0.1:2525",
        smtp_ca_file=tmp_path / "missing.pem",
        secret_key="k",
    )
    with pytest.raises(ConfigError, match="NURTURE_SMTP_CA_FILE"):
        build_delivery(settings, db, clock, pack=default_pack())


def test_credentials_without_auth_on_offer_fail_at_once_and_unsent(
    db: Database, clock: VirtualClock
) -> None:
    inbox, port = TlsInbox(), free_port()
    # AUTH only after STARTTLS, and this server has no TLS: the login can never happen.
    controller = Controller(inbox, hostname="127.0.0.1", port=port, authenticator=authenticate)
    controller.start()
    try:
        channel = SmtpEmail(f"smtp://mailer:s3cr%25t@127.0.0.1:{port}", clock, timeout=10)
        job = email_job(new_contact(db, clock))
        with pytest.raises(ProviderError, match="offers no AUTH") as info:
            asyncio.run(make_delivery(db, clock, channel).send_email(job))
    finally:
        controller.stop()
    assert info.value.permanent and inbox.messages == []
    with db.read() as conn:
        row = message_store.get_by_key(conn, job.key)
    assert row is not None and row["status"] == "failed"
