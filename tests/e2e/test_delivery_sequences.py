"""Issue 9's "done when": the Christmas and pre-call sequences and the default rules send real
e-mail through SMTP (a local aiosmtpd server), and through Brevo and Resend against fakes of
their documented APIs, with unsubscribe working end to end.

Three contacts over twelve virtual days, every input a signed webhook over HTTP, the real
processor and job worker: Ann signs up for the Christmas assessment (CRITICAL) and gets e-mails
1 to 4, then clicks the one-click unsubscribe link taken from the last e-mail's
``List-Unsubscribe`` header and gets nothing more; Bob books a call 80 h ahead and gets the
three reminders; Cy buys and gets the thank-you and the VIP offer of the default rules.
"""

from __future__ import annotations

import asyncio
import email
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from email import policy
from email.message import EmailMessage
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from aiosmtpd.controller import Controller
from sqlalchemy import select

from nurture.bootstrap import build_job_worker, delivery
from nurture.clock import VirtualClock
from nurture.config import Settings
from nurture.pack import DEFAULTS_DIR
from nurture.providers.http import new_client
from nurture.schema.tables import enrollments, messages
from nurture.storage import jobs as job_store
from nurture.testing import (
    FakeBrevo,
    FakeResend,
    Harness,
    calcom_request,
    free_port,
    harness,
    new_secret,
    signed_json,
    standard_request,
)
from tests.integration.providers.test_transports import Inbox

FORMS_SECRET = new_secret()
TRACK_SECRET = new_secret()
CALCOM_SECRET = "calcom-secret-for-delivery"
PUBLIC_URL = "https://mail.busos.example"


@dataclass
class Mail:
    """One e-mail as the provider received it."""

    to: str
    subject: str
    headers: dict[str, str]
    text: str
    html: str


def smtp_mails(raws: list[bytes]) -> list[Mail]:
    out = []
    for raw in raws:
        msg = email.message_from_bytes(raw, policy=policy.default)
        assert isinstance(msg, EmailMessage)
        text, html = msg.get_body(("plain",)), msg.get_body(("html",))
        assert text is not None and html is not None  # both parts, always
        out.append(
            Mail(
                to=str(msg["To"]),
                subject=str(msg["Subject"]),
                headers={k: str(v) for k, v in msg.items()},
                text=text.get_content(),
                html=html.get_content(),
            )
        )
    return out


class Provider:
    """The receiving side of one provider, and the settings that point nurture at it."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.inbox = Inbox()
        self.brevo = FakeBrevo()
        self.resend = FakeResend()

    def settings(self, port: int) -> dict[str, Any]:
        if self.name == "smtp":
            return {"email_provider": "smtp", "smtp_url": f"smtp://127.0.0.1:{port}"}
        if self.name == "brevo":
            return {"email_provider": "brevo", "brevo_api_key": self.brevo.api_key}
        return {"email_provider": "resend", "resend_api_key": self.resend.api_key}

    def transport(self) -> httpx.MockTransport:
        return self.brevo.transport() if self.name == "brevo" else self.resend.transport()

    def mails(self) -> list[Mail]:
        if self.name == "smtp":
            return smtp_mails([raw for _, _, raw in self.inbox.messages])
        if self.name == "brevo":
            return [
                Mail(
                    to=b["to"][0]["email"],
                    subject=b["subject"],
                    headers=b["headers"],
                    text=b.get("textContent", ""),
                    html=b["htmlContent"],
                )
                for b in self.brevo.accepted
            ]
        return [
            Mail(
                to=b["to"][0],
                subject=b["subject"],
                headers=b.get("headers", {}),
                text=b.get("text", ""),
                html=b["html"],
            )
            for b in self.resend.accepted
        ]

    def to(self, address: str) -> list[Mail]:
        return [m for m in self.mails() if address in m.to]


@pytest.fixture(params=["smtp", "brevo", "resend"])
def provider(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    p = Provider(request.param)
    if p.name != "smtp":
        # The delivery layer's one shared client, with the provider's fake as its transport.
        monkeypatch.setattr(
            delivery,
            "new_client",
            lambda timeout, transport=None: new_client(timeout, p.transport()),
        )
    port = free_port()
    controller = Controller(p.inbox, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield p, port
    finally:
        controller.stop()


@pytest.fixture
def h(
    provider: tuple[Provider, int], make_settings: Callable[..., Settings], clock: VirtualClock
) -> Iterator[Harness]:
    p, port = provider
    settings = make_settings(
        forms_secret=FORMS_SECRET,
        track_secret=TRACK_SECRET,
        calcom_webhook_secret=CALCOM_SECRET,
        automation_dir=DEFAULTS_DIR,
        email_from="BusOS <hello@busos.example>",
        secret_key="unsubscribe-signing-key",
        public_url=PUBLIC_URL,
        **p.settings(port),
    )
    with harness(settings, clock) as hh:
        yield hh


def run_until(h: Harness, clock: VirtualClock, end: datetime) -> None:
    """Process events and run every job due up to ``end``, jumping the clock job to job."""
    worker = build_job_worker(h.container)
    kinds = worker.registry.kinds
    while True:
        h.process()
        asyncio.run(worker.drain())
        h.process()
        with h.container.db.read() as conn:
            nxt = job_store.next_run_at(conn, kinds)
        if nxt is None or nxt > end:
            break
        clock.set(max(nxt, clock.now()))
    clock.set(max(end, clock.now()))


def sent_templates(h: Harness, provider: str) -> dict[str, list[str]]:
    with h.container.db.read() as conn:
        rows = conn.execute(
            select(messages.c.to_address, messages.c.template, messages.c.provider)
            .where(messages.c.status == "sent")
            .order_by(messages.c.id)
        ).all()
    out: dict[str, list[str]] = {}
    for to, template, via in rows:
        assert via == provider
        out.setdefault(to, []).append(template)
    return out


def one_click_path(mail: Mail) -> str:
    targets = [t.strip().strip("<>") for t in mail.headers["List-Unsubscribe"].split(",")]
    [url] = [t for t in targets if t.startswith("https://")]
    assert url.startswith(f"{PUBLIC_URL}/u/")
    return urlsplit(url).path


def test_sequences_and_default_rules_send_real_email_and_unsubscribe_works(
    h: Harness, clock: VirtualClock, provider: tuple[Provider, int]
) -> None:
    p, _ = provider
    start = clock.now()

    # Ann: the Christmas assessment, two red systems (CRITICAL).
    ann = {
        "email": "ann@example.com",
        "first_name": "Ann",
        "business_name": "Ann's Salon",
        "assessment_score": 41,
        "red_systems": 2,
        "orange_systems": 1,
        "weakest_system_1": "Money",
        "weakest_system_2": "Serve",
        "revenue_leak_total": 12000,
    }
    raw, headers = standard_request(FORMS_SECRET, ann, clock.now())
    r = h.client.post("/webhooks/forms/christmas-assessment", content=raw, headers=headers)
    assert r.status_code == 202, r.text

    # Bob: books the diagnostic call 80 h ahead (Cal.com, signed).
    meeting = start + timedelta(hours=80)
    booking = {
        "triggerEvent": "BOOKING_CREATED",
        "createdAt": clock.now().isoformat(),
        "payload": {
            "title": "Christmas Readiness Diagnostic",
            "startTime": meeting.isoformat(),
            "endTime": (meeting + timedelta(minutes=45)).isoformat(),
            "organizer": {"name": "Sam", "email": "sam@busos.example", "timeZone": "UTC"},
            "attendees": [{"name": "Bob Ray", "email": "bob@example.com", "timeZone": "UTC"}],
            "uid": "bk_bob",
            "metadata": {"videoCallUrl": "https://app.cal.com/video/bk_bob"},
        },
    }
    raw, headers = calcom_request(CALCOM_SECRET, booking)
    assert h.client.post("/webhooks/calcom", content=raw, headers=headers).status_code == 202

    # Cy: a purchase over 50 (the default `purchase` rule; its +50 crosses 80: the VIP offer).
    purchase = {
        "type": "purchase.completed",
        "contact": {"email": "cy@example.com", "first_name": "Cy"},
        "data": {"order_id": "A-1001", "amount": 120.0, "currency": "EUR"},
    }
    raw, headers = signed_json(TRACK_SECRET, purchase, clock.now())
    assert h.client.post("/webhooks/track", content=raw, headers=headers).status_code == 202

    run_until(h, clock, start + timedelta(hours=121))
    four = sent_templates(h, p.name)["ann@example.com"]
    assert four == [
        "christmas_email_1",
        "christmas_email_2_critical",
        "christmas_email_3",
        "christmas_email_4",
    ]
    mails = p.to("ann@example.com")
    assert len(mails) == 4  # the provider got each one once
    assert all("{{" not in m.html + m.text + m.subject for m in mails)
    assert all(m.headers["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click" for m in mails)

    # Ann clicks "unsubscribe" in her mail client (RFC 8058 one-click POST).
    r = h.client.post(
        one_click_path(mails[-1]),
        content=b"List-Unsubscribe=One-Click",
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    assert r.status_code == 200 and "unsubscribed" in r.text

    run_until(h, clock, start + timedelta(days=12))
    sent = sent_templates(h, p.name)
    assert sent["ann@example.com"] == four  # e-mails 5 to 7 never leave
    assert len(p.to("ann@example.com")) == 4
    with h.container.db.read() as conn:
        christmas = conn.execute(
            select(enrollments.c.status, enrollments.c.end_reason).where(
                enrollments.c.sequence_id == "christmas-2025"
            )
        ).one()
    assert tuple(christmas) == ("exited", "event email.unsubscribed")

    assert sent["bob@example.com"] == ["precall_72h", "precall_24h", "precall_2h"]
    bob = p.to("bob@example.com")
    assert len(bob) == 3
    assert all(m.text.startswith("Hi Bob,") for m in bob)
    assert "Join here: https://app.cal.com/video/bk_bob" in bob[-1].text

    assert sorted(sent["cy@example.com"]) == ["thank_you", "vip_offer"]
    cy = {m.subject: m for m in p.to("cy@example.com")}
    assert set(cy) == {"Merci pour votre achat!", "Offre VIP exclusive pour Cy"}
    assert "A-1001" in cy["Merci pour votre achat!"].text
    assert len(p.mails()) == 4 + 3 + 2
