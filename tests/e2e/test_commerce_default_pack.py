"""Issue 7's "done when", on the built-in pack: Stripe purchases -> orders and RFM -> the
``value`` segment and the lead score -> a recommendation e-mail, rendered and delivered.

Signed Stripe deliveries go in over HTTP; the processor records the orders and scores each buyer;
the API shows the figures, the segment and the score's components; the campaign's dry run (the
CLI, as a user runs it) changes nothing; ``--send`` queues the mails and the job worker renders
the built-in ``recommendations`` template into the outbox.
"""

from __future__ import annotations

import asyncio
import email
import json
import math
import uuid
from collections.abc import Callable, Iterator
from datetime import timedelta
from email import policy
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select
from typer.testing import CliRunner

from nurture.bootstrap import build_container, build_job_worker
from nurture.cli import commerce as cli_commerce
from nurture.cli.main import app
from nurture.clock import VirtualClock
from nurture.config import Settings
from nurture.pack import DEFAULTS_DIR
from nurture.schema.tables import jobs as jobs_table
from nurture.schema.tables import messages as messages_table
from nurture.storage import api_keys
from nurture.testing import Harness, harness, stripe_request

STRIPE_SECRET = "whsec_commerce_e2e_7f2a"
API_KEY = "nk_commerce_e2e"
AUTH = {"authorization": f"Bearer {API_KEY}"}
# what the built-in template says for each scenario
PHRASES = {
    "rebuy": "à retrouver, vous l'avez aimé",
    "cross-sell": "l'accord parfait avec vos préférences",
    "win-back": "un de nos favoris du moment",
}
OWNED = {
    "ann@shop.fr": {"prod_cremant", "prod_riesling", "prod_pinot"},
    "bob@shop.fr": {"prod_cremant", "prod_riesling"},
    "cat@shop.fr": {"prod_cremant"},
    "dan@shop.fr": {"prod_pinot", "prod_gewurz"},
}
NAMES = {
    "prod_cremant": "Crémant d'Alsace",
    "prod_riesling": "Riesling Grand Cru",
    "prod_pinot": "Pinot Noir",
    "prod_gewurz": "Gewurztraminer",
}


@pytest.fixture
def h(
    make_settings: Callable[..., Settings], clock: VirtualClock, tmp_path: Path
) -> Iterator[Harness]:
    settings = make_settings(
        stripe_webhook_secret=STRIPE_SECRET,
        automation_dir=DEFAULTS_DIR,
        outbox_dir=tmp_path / "outbox",
    )
    with harness(settings, clock) as hh:
        with hh.container.db.begin() as conn:
            api_keys.create(conn, "commerce", API_KEY, clock.now())
        yield hh


def checkout(h: Harness, email_: str, items: list[tuple[str, int, int]]) -> None:
    """A ``checkout.session.completed`` with expanded line items (product, quantity, cents)."""
    total = sum(q * cents for _, q, cents in items)
    intent = f"pi_{uuid.uuid4().hex[:12]}"
    event = {
        "id": f"evt_{uuid.uuid4().hex[:16]}",
        "object": "event",
        "created": int(h.clock.now().timestamp()),
        "livemode": False,
        "type": "checkout.session.completed",
        "data": {
            "object": {
                "id": f"cs_{intent}",
                "object": "checkout.session",
                "amount_total": total,
                "currency": "eur",
                "customer": None,
                "customer_details": {"email": email_, "name": None},
                "payment_intent": intent,
                "payment_status": "paid",
                "line_items": {
                    "object": "list",
                    "data": [
                        {
                            "description": NAMES[product],
                            "quantity": q,
                            "price": {
                                "id": f"price_{product}",
                                "product": product,
                                "unit_amount": c,
                            },
                        }
                        for product, q, c in items
                    ],
                },
            }
        },
    }
    body, headers = stripe_request(STRIPE_SECRET, event, h.clock.now())
    r = h.client.post("/webhooks/stripe", content=body, headers=headers)
    assert r.status_code == 202, r.text


def contact(h: Harness, ref: str) -> dict[str, Any]:
    r = h.client.get(f"/api/v1/contacts/{ref}", headers=AUTH)
    assert r.status_code == 200, r.text
    out: dict[str, Any] = r.json()
    return out


def value_rule(rfm: dict[str, Any]) -> str:
    """SPEC §5's ``value`` segmentation, written out independently of segments.yaml."""
    if rfm["recency_days"] > 180 and rfm["frequency"] == 1:
        return "Churn"
    if rfm["score"] >= 3.5:
        return "VIP"
    if rfm["score"] <= 1.5:
        return "At Risk"
    return "Standard"


def count(h: Harness, table: Any, *where: Any) -> int:
    with h.container.db.read() as conn:
        return int(conn.execute(select(func.count()).select_from(table).where(*where)).scalar_one())


def outbox(h: Harness) -> dict[str, email.message.EmailMessage]:
    """Recommendation e-mails in the outbox, by recipient."""
    found = {}
    for path in sorted(h.container.settings.outbox_dir.glob("*.eml")):
        msg = email.message_from_bytes(path.read_bytes(), policy=policy.default)
        assert isinstance(msg, email.message.EmailMessage)
        if "suggestions" in str(msg["Subject"]):
            found[str(msg["To"])] = msg
    return found


def test_purchases_drive_segments_scores_and_a_recommendation_email(
    h: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert isinstance(h.clock, VirtualClock)
    # ann buys often and much; bob buys cremant + riesling once; cat buys cremant once, cheaply;
    # dan buys pinot + gewurztraminer, twice (the pair the model learns besides cremant+riesling)
    checkout(h, "ann@shop.fr", [("prod_cremant", 6, 1800), ("prod_riesling", 3, 2500)])
    checkout(h, "dan@shop.fr", [("prod_pinot", 1, 1500), ("prod_gewurz", 1, 1900)])
    h.process()
    h.clock.advance(timedelta(days=20))
    checkout(h, "bob@shop.fr", [("prod_cremant", 1, 1800), ("prod_riesling", 1, 2500)])
    checkout(h, "ann@shop.fr", [("prod_cremant", 6, 1800), ("prod_riesling", 6, 2500)])
    checkout(h, "dan@shop.fr", [("prod_pinot", 1, 1500), ("prod_gewurz", 1, 1900)])
    h.process()
    h.clock.advance(timedelta(days=20))
    checkout(h, "ann@shop.fr", [("prod_pinot", 12, 1500)])
    checkout(h, "cat@shop.fr", [("prod_cremant", 1, 900)])
    h.process()

    buyers = {ref: contact(h, ref) for ref in ("ann@shop.fr", "bob@shop.fr", "cat@shop.fr")}
    buyers["dan@shop.fr"] = contact(h, "dan@shop.fr")
    assert buyers["ann@shop.fr"]["rfm"]["frequency"] == 3
    assert buyers["ann@shop.fr"]["rfm"]["monetary"] == 108.0 + 75.0 + 108.0 + 150.0 + 180.0
    for ref, person in buyers.items():
        rfm = person["rfm"]
        assert set(rfm) >= {"recency_days", "frequency", "monetary", "r", "f", "m", "score"}
        # RFM drives the value segmentation of the built-in pack...
        assert person["segments"]["value"] == value_rule(rfm), ref
        # ... and the lead score's profile part
        explained = h.client.get(f"/api/v1/contacts/{ref}/score", headers=AUTH).json()
        parts = explained["components"]
        assert parts["rfm"] == math.floor(10 * rfm["score"]), (ref, parts)
        assert parts["purchases"] == min(5 * rfm["frequency"], 25), (ref, parts)
        assert person["score"] == explained["total"], ref
    assert buyers["ann@shop.fr"]["segments"]["value"] == "VIP"
    assert buyers["cat@shop.fr"]["segments"]["value"] in ("Standard", "At Risk")

    # the CLI builds its container from the environment; here with the test's virtual clock
    monkeypatch.setattr(
        cli_commerce, "container", lambda: build_container(h.container.settings, clock=h.clock)
    )
    # the pack's own mails (thank-you, VIP offer) go out: they are marketing mail, so the
    # recommendation campaign keeps those contacts silent for 135 days
    asyncio.run(build_job_worker(h.container).drain())
    h.clock.advance(timedelta(days=70))
    asyncio.run(build_job_worker(h.container).drain())
    silenced = marketing_recipients(h)
    assert silenced and silenced < set(buyers)

    # the dry run, through the CLI as a user runs it: a plan, and no change anywhere
    jobs_before, messages_before = count(h, jobs_table), count(h, messages_table)
    result = CliRunner().invoke(app, ["campaigns", "recommend", "--dry-run", "--json"])
    assert result.exit_code == 0, result.output
    assert "dry run: nothing was queued or sent" in result.output
    planned = planned_emails(result.output)
    assert planned == set(buyers) - silenced
    assert (count(h, jobs_table), count(h, messages_table)) == (jobs_before, messages_before)
    asyncio.run(build_job_worker(h.container).drain())
    assert outbox(h) == {}

    result = CliRunner().invoke(app, ["campaigns", "recommend", "--send"])
    assert result.exit_code == 0, result.output
    assert f"queued {len(planned)} e-mails" in result.output
    asyncio.run(build_job_worker(h.container).drain())
    assert set(outbox(h)) == planned
    check_mails(h, planned)
    # the same campaign again the same day sends nothing more (silence window, job keys)
    result = CliRunner().invoke(app, ["campaigns", "recommend", "--send"])
    assert result.exit_code == 0, result.output
    assert f"{len(buyers)} buyers considered, 0 to mail" in result.output

    # past the window, everyone is mailed again
    h.clock.advance(timedelta(days=136))
    asyncio.run(build_job_worker(h.container).drain())
    result = CliRunner().invoke(app, ["campaigns", "recommend", "--send"])
    assert result.exit_code == 0, result.output
    assert f"queued {len(buyers)} e-mails" in result.output
    asyncio.run(build_job_worker(h.container).drain())
    assert set(outbox(h)) == set(buyers)
    check_mails(h, set(buyers))
    assert count(h, messages_table, messages_table.c.template == "recommendations") == (
        len(planned) + len(buyers)
    )


def planned_emails(output: str) -> set[str]:
    """The recipients in ``--json`` output (one JSON object per line)."""
    return {json.loads(line)["email"] for line in output.splitlines() if line.startswith("{")}


def marketing_recipients(h: Harness) -> set[str]:
    """Who was sent a non-transactional e-mail (read apart from the campaign's own query)."""
    with h.container.db.read() as conn:
        rows = conn.execute(
            select(messages_table.c.to_address).where(
                messages_table.c.transactional.is_(False), messages_table.c.status == "sent"
            )
        )
        return {r.to_address for r in rows}


def check_mails(h: Harness, recipients: set[str]) -> None:
    """Each e-mail lists what the API recommends, with the scenario's own words."""
    mails = outbox(h)
    for ref in recipients:
        text = mails[ref].get_body(("plain",))
        assert text is not None
        body = text.get_content()
        assert "{{" not in body and "/u/" in body  # filled completely, unsubscribe link
        found = h.client.get(f"/api/v1/contacts/{ref}/recommendations", headers=AUTH).json()
        assert found["items"], ref
        for item in found["items"]:
            assert f"- {item['name']} ({PHRASES[item['scenario']]})" in body, (ref, body)
        if found["scenario"] == "cross-sell":
            # something new: never a product the contact already has
            owned = OWNED[ref]
            assert not owned & {i["product_key"] for i in found["items"]}, (ref, found)
