"""Stripe events -> ``purchase.completed``; every other type is stored as ``stripe.<type>``.

The Stripe event id is the dedupe key. A Checkout payment sends both
``checkout.session.completed`` and ``payment_intent.succeeded``: both carry the PaymentIntent id
as ``order_id``, so whatever records orders can count the purchase once.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any

from nurture.core.events import ContactRef, InboundEvent
from nurture.errors import FieldProblem, InvalidFields, NotConfigured
from nurture.providers.payloads import email_of, from_epoch, load_object, text_of, vendor_type
from nurture.providers.signing import verify_stripe

PURCHASE_TYPES = (
    "checkout.session.completed",
    # a delayed payment method (SEPA debit, bank transfer...) finally went through
    "checkout.session.async_payment_succeeded",
    "payment_intent.succeeded",
)

# Stripe amounts are in the currency's smallest unit; these currencies have none or three
# decimals (docs.stripe.com/currencies).
ZERO_DECIMAL = frozenset(
    {"bif", "clp", "djf", "gnf", "jpy", "kmf", "krw", "mga"}
    | {"pyg", "rwf", "ugx", "vnd", "vuv", "xaf", "xof", "xpf"}
)
THREE_DECIMAL = frozenset({"bhd", "jod", "kwd", "omr", "tnd"})


def major_units(amount: Any, currency: str | None) -> float | None:
    if isinstance(amount, bool) or not isinstance(amount, int):
        return None
    code = (currency or "").lower()
    exponent = 0 if code in ZERO_DECIMAL else 3 if code in THREE_DECIMAL else 2
    return float(Decimal(amount).scaleb(-exponent))


def line_items(session: Mapping[str, Any], currency: str | None) -> list[dict[str, Any]]:
    """Only present when the sender expanded ``line_items`` (webhooks do not by default)."""
    block = session.get("line_items")
    rows = block.get("data") if isinstance(block, dict) else None
    out = []
    for row in rows if isinstance(rows, list) else []:
        if not isinstance(row, dict):
            continue
        price = row.get("price") if isinstance(row.get("price"), dict) else {}
        assert isinstance(price, dict)
        product = price.get("product")
        product_key = product.get("id") if isinstance(product, dict) else product
        quantity = row.get("quantity") if isinstance(row.get("quantity"), int) else 1
        out.append(
            {
                "product_key": text_of(product_key) or text_of(price.get("id")),
                "name": text_of(row.get("description")),
                "quantity": quantity,
                "unit_price": major_units(price.get("unit_amount"), currency),
            }
        )
    return out


class StripeSource:
    name = "stripe"

    def __init__(
        self,
        secrets: Sequence[str],
        *,
        tolerance: int = 300,
        secret_env: str = "NURTURE_STRIPE_WEBHOOK_SECRET",
    ) -> None:
        self.secrets = list(secrets)
        self.tolerance = tolerance
        self.secret_env = secret_env

    def verify(self, headers: Mapping[str, str], raw_body: bytes, now: datetime) -> None:
        if not self.secrets:
            raise NotConfigured(f"source 'stripe' is not configured: set {self.secret_env}")
        verify_stripe(headers, raw_body, self.secrets, now, tolerance=self.tolerance)

    def parse(self, raw_body: bytes, headers: Mapping[str, str]) -> list[InboundEvent]:
        body = load_object(raw_body)
        problems = []
        event_id, name = text_of(body.get("id")), text_of(body.get("type"))
        if event_id is None:
            problems.append(FieldProblem("id", "is required"))
        if name is None:
            problems.append(FieldProblem("type", "is required"))
        block = body.get("data")
        obj = block.get("object") if isinstance(block, dict) else None
        if not isinstance(obj, dict):
            problems.append(FieldProblem("data.object", "must be an object"))
        if problems:
            raise InvalidFields(problems)
        assert event_id is not None and name is not None and isinstance(obj, dict)
        when = from_epoch(body.get("created"))
        # A session completed with a delayed payment method is not paid yet: the purchase is
        # its async_payment_succeeded (or the PaymentIntent's success), not this event.
        unpaid = name.startswith("checkout.session.") and obj.get("payment_status") == "unpaid"
        if name not in PURCHASE_TYPES or unpaid:
            return [
                InboundEvent(
                    source=self.name,
                    type=vendor_type("stripe", name),
                    dedupe_key=event_id,
                    contact=None,
                    data={
                        "event": name,
                        "object_id": text_of(obj.get("id")),
                        **({"payment_status": "unpaid"} if unpaid else {}),
                    },
                    occurred_at=when,
                )
            ]
        data, contact = (
            self._checkout(obj) if name.startswith("checkout.session.") else self._intent(obj)
        )
        data["stripe_event"] = name
        data["livemode"] = bool(body.get("livemode"))
        return [
            InboundEvent(
                source=self.name,
                type="purchase.completed",
                dedupe_key=event_id,
                contact=contact,
                data=data,
                occurred_at=when,
            )
        ]

    def _checkout(self, session: dict[str, Any]) -> tuple[dict[str, Any], ContactRef | None]:
        currency = text_of(session.get("currency"))
        details = session.get("customer_details")
        details = details if isinstance(details, dict) else {}
        email = email_of(details.get("email")) or email_of(session.get("customer_email"))
        data: dict[str, Any] = {
            "order_id": text_of(session.get("payment_intent")) or text_of(session.get("id")),
            "checkout_session_id": text_of(session.get("id")),
            "amount": major_units(session.get("amount_total"), currency),
            "currency": currency.upper() if currency else None,
            "items": line_items(session, currency),
            "customer_email": email,
            "payment_status": text_of(session.get("payment_status")),
        }
        if text_of(session.get("client_reference_id")):
            data["client_reference_id"] = text_of(session.get("client_reference_id"))
        if isinstance(session.get("metadata"), dict) and session["metadata"]:
            data["metadata"] = session["metadata"]
        traits = {}
        name = text_of(details.get("name"))
        if name:
            traits["name"] = name
        return data, _contact(email, session.get("customer"), traits)

    def _intent(self, intent: dict[str, Any]) -> tuple[dict[str, Any], ContactRef | None]:
        currency = text_of(intent.get("currency"))
        amount = intent.get("amount_received")
        if not isinstance(amount, int) or isinstance(amount, bool):
            amount = intent.get("amount")
        email = email_of(intent.get("receipt_email"))
        data: dict[str, Any] = {
            "order_id": text_of(intent.get("id")),
            "amount": major_units(amount, currency),
            "currency": currency.upper() if currency else None,
            "items": [],
            "customer_email": email,
        }
        if isinstance(intent.get("metadata"), dict) and intent["metadata"]:
            data["metadata"] = intent["metadata"]
        return data, _contact(email, intent.get("customer"), {})


def _contact(email: str | None, customer: Any, traits: dict[str, Any]) -> ContactRef | None:
    """E-mail and/or the Stripe customer id; neither means the purchase is stored unattributed."""
    customer_id = customer.get("id") if isinstance(customer, dict) else customer
    identities = {"stripe_customer": str(customer_id)} if text_of(customer_id) else {}
    if email is None and not identities:
        return None
    return ContactRef(email=email, identities=identities, traits=traits)
