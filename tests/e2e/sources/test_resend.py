"""Resend over the ASGI app, signed by the ``svix`` library as Resend signs."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from svix.webhooks import Webhook

from nurture.testing import Harness, new_secret
from tests.e2e.sources.conftest import (
    RESEND_NEW,
    RESEND_OLD,
    assert_problem,
    only,
    process_all,
    stored,
)


def payload(kind: str, **data: Any) -> dict[str, Any]:
    return {
        "type": kind,
        "created_at": "2026-11-23T08:59:30.123456+00:00",
        "data": {
            "created_at": "2026-11-23T08:58:00.000000+00:00",
            "email_id": "56761188-7520-42d8-8898-ff6fc54ce618",
            "from": "Acme <hello@acme.example>",
            "to": ["ann@example.com"],
            "subject": "Welcome",
            "tags": [{"name": "nurture_message_id", "value": "seq:4:step-1"}],
            **data,
        },
    }


def signed(
    secret: str, body: Any, when: datetime, msg_id: str | None = None
) -> tuple[bytes, dict[str, str]]:
    raw = body if isinstance(body, bytes) else orjson.dumps(body)
    msg_id = msg_id or f"msg_{uuid.uuid4().hex}"
    signature = Webhook(secret).sign(msg_id, when, raw.decode())
    return raw, {
        "svix-id": msg_id,
        "svix-timestamp": str(int(when.timestamp())),
        "svix-signature": signature,
        "content-type": "application/json",
    }


def post(
    h: Harness, body: Any, *, secret: str = RESEND_NEW, when: datetime | None = None, **kw: Any
) -> Any:
    raw, headers = signed(secret, body, when or h.clock.now(), **kw)
    return h.client.post("/webhooks/resend", content=raw, headers=headers)


def test_event_kinds(h: Harness) -> None:
    cases = [
        (payload("email.sent"), "email.sent", {}),
        (payload("email.delivered"), "email.delivered", {}),
        (payload("email.delivery_delayed"), "email.deferred", {}),
        (
            payload(
                "email.bounced",
                bounce={
                    "message": "mailbox does not exist",
                    "subType": "General",
                    "type": "Permanent",
                },
            ),
            "email.bounced",
            {"kind": "hard", "reason": "mailbox does not exist"},
        ),
        (payload("email.complained"), "email.complained", {}),
        (payload("email.opened"), "email.opened", {"unique": False, "proxy": False}),
        (
            payload("email.clicked", click={"link": "https://acme.example/p", "timestamp": "x"}),
            "email.clicked",
            {"link": "https://acme.example/p"},
        ),
        (payload("email.suppressed"), "email.blocked", {}),
    ]
    for body, event_type, expected in cases:
        r = post(h, body)
        assert r.status_code == 202, r.text
        row = stored(h)[-1]
        assert row["type"] == event_type
        data = row["canonical"]["data"]
        assert data["message_id"] == "seq:4:step-1"
        assert data["provider_message_id"] == "56761188-7520-42d8-8898-ff6fc54ce618"
        for key, value in expected.items():
            assert data[key] == value
        assert row["canonical"]["contact"] == {"email": "ann@example.com"}
        # the event's own time, not the message's
        assert row["occurred_at"] == datetime(2026, 11, 23, 8, 59, 30, 123456, tzinfo=UTC)


def test_redelivery_with_same_svix_id_is_duplicate(h: Harness) -> None:
    first = post(h, payload("email.delivered"), msg_id="msg_fixed")
    # Svix retries carry a new timestamp (and so a new signature) but the same id
    later = h.clock.now() + timedelta(seconds=5)
    again = post(h, payload("email.delivered"), msg_id="msg_fixed", when=later)
    assert first.status_code == 202
    assert again.status_code == 200 and again.json()["status"] == "duplicate"
    assert len(stored(h)) == 1


def test_stale_and_future_timestamps_are_refused(h: Harness) -> None:
    now = h.clock.now()
    assert_problem(post(h, payload("email.sent"), when=now - timedelta(seconds=301)), 401, "window")
    assert_problem(post(h, payload("email.sent"), when=now + timedelta(seconds=301)), 401, "window")
    assert post(h, payload("email.sent"), when=now - timedelta(seconds=299)).status_code == 202


def test_rotation_and_removed_secret(make_harness: Callable[..., Harness]) -> None:
    h = make_harness()
    assert post(h, payload("email.sent"), secret=RESEND_OLD).status_code == 202
    assert post(h, payload("email.delivered"), secret=RESEND_NEW).status_code == 202
    after = make_harness(resend_webhook_secret=RESEND_NEW)
    assert_problem(post(after, payload("email.opened"), secret=RESEND_OLD), 401, "does not match")


def test_tampered_missing_and_wrong_type(h: Harness) -> None:
    raw, headers = signed(RESEND_NEW, payload("email.delivered"), h.clock.now())
    tampered = raw.replace(b"ann@example.com", b"eve@example.com")
    assert_problem(h.client.post("/webhooks/resend", content=tampered, headers=headers), 401)
    r = h.client.post("/webhooks/resend", content=raw, headers={"content-type": "application/json"})
    assert_problem(r, 401, "missing signature headers")
    assert_problem(post(h, payload("email.sent"), secret=new_secret()), 401)
    raw, headers = signed(RESEND_NEW, payload("email.sent"), h.clock.now())
    headers["content-type"] = "text/plain"
    assert_problem(h.client.post("/webhooks/resend", content=raw, headers=headers), 415)
    assert_problem(post(h, b"[1, 2"), 400)
    assert stored(h) == []


def test_unknown_type_is_stored_and_ignored(h: Harness) -> None:
    body = {"type": "contact.created", "created_at": "2026-11-23T08:00:00Z", "data": {"id": "c1"}}
    assert post(h, body).status_code == 202
    row = only(h)
    assert row["type"] == "resend.contact.created"
    assert row["canonical"]["contact"] is None
    process_all(h)


def test_several_recipients_are_stored_unattributed(h: Harness) -> None:
    body = payload("email.delivered", to=["ann@example.com", "bob@example.com"])
    assert post(h, body).status_code == 202
    row = only(h)
    assert row["canonical"]["contact"] is None
    assert row["canonical"]["data"]["recipients"] == ["ann@example.com", "bob@example.com"]


def test_not_configured(make_harness: Callable[..., Harness]) -> None:
    h = make_harness(resend_webhook_secret="")
    assert_problem(post(h, payload("email.sent")), 404, "NURTURE_RESEND_WEBHOOK_SECRET")
