"""The default rules send real e-mail through SMTP; unsubscribe works end to end.

A signed purchase goes in over HTTP; the worker runs the rules and the delivery jobs; a local
aiosmtpd server receives the e-mails; the one-click unsubscribe link from the e-mail's header
is POSTed back; the next marketing e-mail is suppressed while a transactional one still goes.
"""

from __future__ import annotations

import asyncio
import email
from collections.abc import Callable, Iterator
from datetime import timedelta
from email import policy
from urllib.parse import urlsplit

import pytest
from aiosmtpd.controller import Controller

from nurture import jobs
from nurture.bootstrap import build_job_worker
from nurture.clock import VirtualClock
from nurture.config import Settings
from nurture.contacts import suppression
from nurture.storage import contacts as contact_store
from nurture.storage import messages as message_store
from nurture.storage import timeline as timeline_store
from nurture.testing import Harness, free_port, harness, new_secret, signed_json
from tests.integration.providers.test_transports import Inbox

SECRET = new_secret()


@pytest.fixture
def inbox() -> Iterator[tuple[int, Inbox]]:
    box = Inbox()
    port = free_port()
    controller = Controller(box, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield port, box
    finally:
        controller.stop()


@pytest.fixture
def h(
    make_settings: Callable[..., Settings], clock: VirtualClock, inbox: tuple[int, Inbox]
) -> Iterator[Harness]:
    settings = make_settings(
        track_secret=SECRET,
        email_provider="smtp",
        smtp_url=f"smtp://127.0.0.1:{inbox[0]}",
        email_from="Boutique <boutique@example.com>",
        secret_key="unsubscribe-signing-key",
        public_url="https://shop.example.com",
    )
    with harness(settings, clock) as hh:
        yield hh


def run_jobs(h: Harness) -> int:
    return asyncio.run(build_job_worker(h.container).drain())


def parsed(raw: bytes) -> email.message.EmailMessage:
    msg = email.message_from_bytes(raw, policy=policy.default)
    assert isinstance(msg, email.message.EmailMessage)
    return msg


def test_purchase_mails_then_one_click_unsubscribe_stops_marketing(
    h: Harness, clock: VirtualClock, inbox: tuple[int, Inbox]
) -> None:
    _, box = inbox
    purchase = {
        "type": "purchase.completed",
        "contact": {"email": "ann@example.com", "first_name": "Ann"},
        "data": {"order_id": "A-1001", "amount": 120.0, "currency": "EUR"},
    }
    body, headers = signed_json(SECRET, purchase, clock.now())
    assert h.client.post("/webhooks/track", content=body, headers=headers).status_code == 202
    h.process()
    run_jobs(h)
    clock.advance(timedelta(minutes=6))  # the thank-you waits 5 minutes
    run_jobs(h)
    subjects = {parsed(raw)["Subject"]: parsed(raw) for _, _, raw in box.messages}
    assert set(subjects) == {"Merci pour votre achat!", "Offre VIP exclusive pour Ann"}
    thanks = subjects["Merci pour votre achat!"]
    assert "A-1001" in thanks.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    assert thanks["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    url = thanks["List-Unsubscribe"].strip("<>")
    assert url.startswith("https://shop.example.com/u/")
    path = urlsplit(url).path

    with h.container.db.read() as conn:
        contact = contact_store.load_by_email(conn, "ann@example.com")
        assert contact is not None
        sent = message_store.for_contact(conn, contact.id)
    assert {m["status"] for m in sent} == {"sent"} and len(sent) == 2

    page = h.client.get(path)  # a link scanner or the person: asks, does not unsubscribe
    assert page.status_code == 200 and "<form" in page.text
    with h.container.db.read() as conn:
        assert suppression.check(conn, contact.id, contact.email, transactional=False) is None
    assert h.client.get(path[:-3] + "xyz").status_code == 400  # tampered token

    one_click = h.client.post(
        path,
        content=b"List-Unsubscribe=One-Click",
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    assert one_click.status_code == 200 and "unsubscribed" in one_click.text
    with h.container.db.read() as conn:  # suppressed at once, before the worker runs
        assert suppression.check(conn, contact.id, contact.email, transactional=False) == (
            "unsubscribed"
        )
    h.process()
    with h.container.db.read() as conn:
        after = contact_store.load(conn, contact.id)
        kinds = [t["kind"] for t in timeline_store.for_contact(conn, contact.id)]
    assert after is not None and after.status == "unsubscribed"
    assert "message.unsubscribed" in kinds

    with h.container.db.begin() as conn:
        for key, transactional in (("later:promo", False), ("later:receipt", True)):
            jobs.enqueue(
                conn,
                kind="send_email",
                key=key,
                run_at=clock.now(),
                payload={
                    "template": "thank_you",
                    "contact_id": contact.id,
                    "event_id": None,
                    "rule_id": None,
                    "enrollment_id": None,
                    "step_id": None,
                    "transactional": transactional,
                    "vars": {},
                },
                contact_id=contact.id,
            )
    run_jobs(h)
    assert len(box.messages) == 3  # the receipt only
    assert "List-Unsubscribe" not in parsed(box.messages[-1][2])
    with h.container.db.read() as conn:
        assert message_store.get_by_key(conn, "later:promo")["status"] == "suppressed"  # type: ignore[index]
        assert message_store.get_by_key(conn, "later:receipt")["status"] == "sent"  # type: ignore[index]


def test_delivery_events_link_back_to_the_message_and_hard_bounce_suppresses(
    h: Harness, clock: VirtualClock, inbox: tuple[int, Inbox]
) -> None:
    with h.container.db.begin() as conn:
        contact = contact_store.create(conn, "bob@example.com", clock.now(), {"first_name": "Bob"})
        jobs.enqueue(
            conn,
            kind="send_email",
            key="seq:7:email-1",
            run_at=clock.now(),
            payload={
                "template": "vip_offer",
                "contact_id": contact.id,
                "event_id": None,
                "rule_id": "high-score",
                "enrollment_id": 7,
                "step_id": "email-1",
                "transactional": False,
                "vars": {},
            },
            contact_id=contact.id,
        )
    run_jobs(h)
    with h.container.db.read() as conn:
        msg = message_store.get_by_key(conn, "seq:7:email-1")
    assert msg is not None and msg["status"] == "sent"
    events = [
        ("email.opened", {"message_id": str(msg["id"])}),
        ("email.clicked", {"provider_message_id": msg["provider_message_id"], "link": "https://x"}),
        ("email.bounced", {"message_id": str(msg["id"]), "kind": "hard"}),
        ("email.delivered", {"message_id": str(msg["id"])}),  # late: must not lift the bounce
    ]
    for type_, data in events:
        payload = {"type": type_, "contact": {"email": "bob@example.com"}, "data": data}
        body, headers = signed_json(SECRET, payload, clock.now())
        assert h.client.post("/webhooks/track", content=body, headers=headers).status_code == 202
        clock.advance(timedelta(seconds=1))
    h.process()
    with h.container.db.read() as conn:
        row = message_store.get(conn, msg["id"])
        bob = contact_store.load(conn, contact.id)
        notes = timeline_store.for_contact(conn, contact.id)
        blocked = suppression.check(conn, contact.id, "bob@example.com", transactional=True)
    assert row is not None and bob is not None
    assert row["opened_at"] and row["clicked_at"] and row["bounced_at"] and row["delivered_at"]
    assert bob.status == "bounced" and blocked == "bounced"
    linked = [n for n in notes if n["kind"].startswith("message.")]
    assert {n["kind"] for n in linked} == {
        "message.opened",
        "message.clicked",
        "message.bounced",
        "message.delivered",
    }
    assert all(n["rule_id"] == "high-score" for n in linked)
    assert all(n["detail"]["step_id"] == "email-1" for n in linked)
