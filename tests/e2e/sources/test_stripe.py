"""Stripe over the ASGI app, signed by the ``stripe`` library's own header builder."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from stripe import WebhookSignature

from nurture.testing import Harness
from tests.e2e.sources.conftest import STRIPE_SECRET, assert_problem, only, process_all, stored

CREATED = 1795424100  # 2026-11-23T08:55:00Z


def event(kind: str, obj: dict[str, Any], event_id: str | None = None) -> dict[str, Any]:
    return {
        "id": event_id or f"evt_{uuid.uuid4().hex[:24]}",
        "object": "event",
        "api_version": "2024-06-20",
        "created": CREATED,
        "livemode": False,
        "pending_webhooks": 1,
        "type": kind,
        "data": {"object": obj},
    }


def session(**extra: Any) -> dict[str, Any]:
    return {
        "id": "cs_test_a1b2",
        "object": "checkout.session",
        "amount_subtotal": 4900,
        "amount_total": 4900,
        "currency": "eur",
        "customer": "cus_Q1w2e3",
        "customer_details": {"email": "Ann@Example.com", "name": "Ann Lee", "phone": None},
        "customer_email": None,
        "mode": "payment",
        "payment_intent": "pi_3Abc",
        "payment_status": "paid",
        "client_reference_id": "order-77",
        "metadata": {},
        **extra,
    }


def intent(**extra: Any) -> dict[str, Any]:
    return {
        "id": "pi_3Abc",
        "object": "payment_intent",
        "amount": 4900,
        "amount_received": 4900,
        "currency": "eur",
        "customer": None,
        "receipt_email": "ann@example.com",
        "status": "succeeded",
        "metadata": {},
        **extra,
    }


def post(
    h: Harness, body: Any, *, secret: str = STRIPE_SECRET, when: datetime | None = None
) -> Any:
    raw = body if isinstance(body, bytes) else orjson.dumps(body)
    stamp = int((when or h.clock.now()).timestamp())
    header = WebhookSignature.generate_signature_header(raw.decode(), secret, stamp)
    headers = {"stripe-signature": header, "content-type": "application/json; charset=utf-8"}
    return h.client.post("/webhooks/stripe", content=raw, headers=headers)


def test_checkout_session_completed_is_a_purchase(h: Harness) -> None:
    line_items = {
        "object": "list",
        "data": [
            {
                "description": "Assessment workshop",
                "quantity": 2,
                "price": {"id": "price_1", "product": "prod_W", "unit_amount": 2450},
            }
        ],
    }
    r = post(h, event("checkout.session.completed", session(line_items=line_items)))
    assert r.status_code == 202, r.text
    row = only(h)
    assert row["type"] == "purchase.completed"
    assert row["occurred_at"] == datetime(2026, 11, 23, 8, 55, tzinfo=UTC)
    canonical = row["canonical"]
    assert canonical["contact"] == {
        "email": "ann@example.com",
        "identities": {"stripe_customer": "cus_Q1w2e3"},
        "traits": {"name": "Ann Lee"},
    }
    data = canonical["data"]
    assert data["order_id"] == "pi_3Abc"
    assert data["amount"] == 49.0
    assert data["currency"] == "EUR"
    assert data["items"] == [
        {"product_key": "prod_W", "name": "Assessment workshop", "quantity": 2, "unit_price": 24.5}
    ]
    process_all(h)


def test_payment_intent_succeeded_shares_the_order_id(h: Harness) -> None:
    assert post(h, event("payment_intent.succeeded", intent())).status_code == 202
    data = only(h)["canonical"]["data"]
    assert data["order_id"] == "pi_3Abc"
    assert data["amount"] == 49.0
    assert data["items"] == []


def test_zero_decimal_currency(h: Harness) -> None:
    body = event(
        "payment_intent.succeeded", intent(amount=5000, amount_received=5000, currency="jpy")
    )
    assert post(h, body).status_code == 202
    assert only(h)["canonical"]["data"]["amount"] == 5000.0


def test_other_types_are_stored_and_ignored(h: Harness) -> None:
    assert (
        post(h, event("customer.created", {"id": "cus_1", "object": "customer"})).status_code == 202
    )
    row = only(h)
    assert row["type"] == "stripe.customer.created"
    assert row["canonical"]["contact"] is None
    process_all(h)


def test_purchase_without_any_customer_is_stored_unattributed(h: Harness) -> None:
    assert post(h, event("payment_intent.succeeded", intent(receipt_email=None))).status_code == 202
    row = only(h)
    assert row["canonical"]["contact"] is None
    assert row["canonical"]["data"]["amount"] == 49.0


def test_replay_is_duplicate(h: Harness) -> None:
    body = event("payment_intent.succeeded", intent(), event_id="evt_fixed")
    assert post(h, body).status_code == 202
    again = post(h, body, when=h.clock.now() + timedelta(seconds=60))
    assert again.status_code == 200 and again.json()["status"] == "duplicate"


def test_signature_failures(h: Harness) -> None:
    body = event("payment_intent.succeeded", intent())
    now = h.clock.now()
    assert_problem(post(h, body, when=now - timedelta(seconds=301)), 401, "window")
    assert_problem(post(h, body, secret="whsec_other"), 401, "does not match")
    raw = orjson.dumps(body)
    header = WebhookSignature.generate_signature_header(
        raw.decode(), STRIPE_SECRET, int(now.timestamp())
    )
    tampered = raw.replace(b"4900", b"9")
    r = h.client.post(
        "/webhooks/stripe",
        content=tampered,
        headers={"stripe-signature": header, "content-type": "application/json"},
    )
    assert_problem(r, 401)
    r = h.client.post("/webhooks/stripe", content=raw, headers={"content-type": "application/json"})
    assert_problem(r, 401, "missing")
    r = h.client.post(
        "/webhooks/stripe",
        content=raw,
        headers={"stripe-signature": header, "content-type": "text/xml"},
    )
    assert_problem(r, 415)
    assert stored(h) == []


def test_rotation(make_harness: Callable[..., Harness]) -> None:
    h = make_harness(stripe_webhook_secret=f"whsec_old_1 {STRIPE_SECRET}")
    assert (
        post(h, event("payment_intent.succeeded", intent()), secret="whsec_old_1").status_code
        == 202
    )
    after = make_harness(stripe_webhook_secret=STRIPE_SECRET)
    assert_problem(post(after, event("customer.created", {"id": "c"}), secret="whsec_old_1"), 401)


def test_malformed_and_not_configured(make_harness: Callable[..., Harness]) -> None:
    h = make_harness()
    body = assert_problem(post(h, {"object": "event", "data": {}}), 422)
    assert {e["field"] for e in body["errors"]} == {"id", "type", "data.object"}
    off = make_harness(stripe_webhook_secret="")
    assert_problem(
        post(off, event("customer.created", {"id": "c"})), 404, "NURTURE_STRIPE_WEBHOOK_SECRET"
    )


def test_unpaid_checkout_waits_for_its_async_payment(h: Harness) -> None:
    # SEPA debit: the session completes unpaid; the money arrives days later
    unpaid = event("checkout.session.completed", session(payment_status="unpaid"))
    assert post(h, unpaid).status_code == 202
    paid = event("checkout.session.async_payment_succeeded", session(payment_status="paid"))
    assert post(h, paid).status_code == 202
    first, second = stored(h)
    assert first["type"] == "stripe.checkout.session.completed"
    assert first["canonical"]["data"]["payment_status"] == "unpaid"
    assert first["canonical"]["contact"] is None
    assert second["type"] == "purchase.completed"
    assert second["canonical"]["data"]["order_id"] == "pi_3Abc"
    assert second["canonical"]["data"]["amount"] == 49.0
    assert second["canonical"]["contact"]["email"] == "ann@example.com"
    process_all(h)
