"""purchase.completed in over /webhooks/track (signed) -> order + RFM on the contact; the
recommendations API; the recommendation campaign (dry run sends nothing, --send queues jobs)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import func, select
from typer.testing import CliRunner

from nurture.clock import VirtualClock
from nurture.commerce import purchases as commerce
from nurture.commerce import recommendations
from nurture.database.engine import Database
from nurture.schema.tables import jobs as jobs_table
from nurture.storage import contacts as contact_store
from nurture.storage import messages as message_store
from nurture.storage import orders as order_store
from nurture.testing import Harness, signed_json
from tests.e2e.conftest import AUTH, TRACK_SECRET


def send(h: Harness, payload: Any, msg_id: str | None = None) -> list[int]:
    body, headers = signed_json(TRACK_SECRET, payload, h.clock.now(), msg_id=msg_id)
    r = h.client.post("/webhooks/track", content=body, headers=headers)
    assert r.status_code in (200, 202), r.text
    return list(r.json().get("event_ids", []))


def purchase(
    email: str,
    order_id: str,
    amount: float,
    items: list[tuple[str, int, float]],
    event_id: str | None = None,
) -> dict[str, Any]:
    return {
        "id": event_id or f"evt-{order_id}",
        "type": "purchase.completed",
        "contact": {"email": email},
        "data": {
            "order_id": order_id,
            "amount": amount,
            "currency": "eur",
            "items": [
                {"product_key": k, "name": k.title(), "quantity": q, "unit_price": p}
                for k, q, p in items
            ],
        },
    }


def contact(h: Harness, ref: str) -> dict[str, Any]:
    r = h.client.get(f"/api/v1/contacts/{ref}", headers=AUTH)
    assert r.status_code == 200, r.text
    data: dict[str, Any] = r.json()
    return data


def test_purchase_event_records_the_order_once_and_sets_rfm(h: Harness) -> None:
    send(h, purchase("ann@shop.fr", "ord-1", 49.9, [("RIESLING", 2, 12.5), ("CREMANT", 1, 24.9)]))
    h.process()
    ann = contact(h, "ann@shop.fr")
    assert ann["rfm"]["frequency"] == 1 and ann["rfm"]["monetary"] == 49.9
    assert ann["rfm"]["recency_days"] == 0
    assert set(ann["rfm"]) == {
        "recency_days",
        "frequency",
        "monetary",
        "r",
        "f",
        "m",
        "score",
        "last_order_at",
    }
    assert ann["rfm"]["last_order_at"] == h.clock.now().strftime("%Y-%m-%dT%H:%M:%SZ")

    # the same order again (a new delivery id, e.g. Stripe plus the shop) is not counted twice
    send(h, purchase("ann@shop.fr", "ord-1", 49.9, [("RIESLING", 2, 12.5)], event_id="other"))
    h.process()
    assert contact(h, "ann@shop.fr")["rfm"]["frequency"] == 1
    with h.container.db.read() as conn:
        assert order_store.count(conn) == (1, 2)

    assert isinstance(h.clock, VirtualClock)
    h.clock.advance(timedelta(days=10))
    send(h, purchase("ann@shop.fr", "ord-2", 20, [("PINOT", 1, 20)]))
    h.process()
    rfm = contact(h, "ann@shop.fr")["rfm"]
    assert (rfm["frequency"], rfm["monetary"], rfm["recency_days"]) == (2, 69.9, 0)
    timeline = h.client.get(f"/api/v1/contacts/{ann['id']}/timeline", headers=AUTH).json()
    kinds = [i["kind"] for i in timeline["items"]]
    assert kinds.count("purchase.recorded") == 2 and "purchase.duplicate" in kinds
    with h.container.db.read() as conn:
        nightly = conn.execute(
            select(func.count()).select_from(jobs_table).where(jobs_table.c.kind == "rfm_recompute")
        ).scalar_one()
    assert nightly >= 1


def test_an_unreadable_purchase_is_noted_not_retried(h: Harness) -> None:
    bad = purchase("bob@shop.fr", "ord-9", 10, [])
    bad["data"]["amount"] = "ten euros"
    [event_id] = send(h, bad)
    h.process()
    event = h.client.get(f"/api/v1/events/{event_id}", headers=AUTH).json()
    assert event["status"] == "processed"
    bob = contact(h, "bob@shop.fr")
    assert bob["rfm"] is None
    timeline = h.client.get(f"/api/v1/contacts/{bob['id']}/timeline", headers=AUTH).json()
    invalid = [i for i in timeline["items"] if i["kind"] == "purchase.invalid"]
    assert invalid[0]["detail"]["problems"] == ["amount: must be a number (major units)"]


def shop(h: Harness) -> None:
    """Three buyers; A and B are bought together twice."""
    assert isinstance(h.clock, VirtualClock)
    send(h, purchase("ann@shop.fr", "o1", 30, [("A", 1, 10), ("B", 1, 20)]))
    send(h, purchase("bob@shop.fr", "o2", 30, [("A", 1, 10), ("B", 1, 20)]))
    send(h, purchase("cat@shop.fr", "o3", 10, [("A", 1, 10)]))
    send(h, purchase("dan@shop.fr", "o4", 5, [("C", 1, 5)]))
    h.process()
    h.clock.advance(timedelta(days=70))


def test_recommendations_api(h: Harness) -> None:
    shop(h)
    r = h.client.get("/api/v1/contacts/cat@shop.fr/recommendations", headers=AUTH)
    assert r.status_code == 200, r.text
    body = r.json()
    # cat bought A once: RFM -> value "Standard" (the rules feature's segmentation) -> cross-sell
    assert (body["segment"], body["scenario"]) == ("Standard", "cross-sell")
    got = [(i["product_key"], i["scenario"], i["reason"]) for i in body["items"]]
    assert got == [
        ("B", "cross-sell", "often bought with A"),
        ("C", "win-back", "best seller: 1 order in the last 90 days"),
    ]
    assert h.client.get("/api/v1/contacts/cat@shop.fr/recommendations").status_code == 401
    r = h.client.get("/api/v1/contacts/nobody@shop.fr/recommendations", headers=AUTH)
    assert r.status_code == 404
    r = h.client.get("/api/v1/contacts/cat@shop.fr/recommendations?n=1", headers=AUTH)
    assert len(r.json()["items"]) == 1


class NoWrites(Database):
    def begin(self) -> Any:  # type: ignore[override]
        raise AssertionError("a dry run opened a write transaction")


def count_jobs(db: Database, kind: str) -> int:
    with db.read() as conn:
        return int(
            conn.execute(
                select(func.count()).select_from(jobs_table).where(jobs_table.c.kind == kind)
            ).scalar_one()
        )


def test_campaign_dry_run_writes_nothing_and_send_queues_once(h: Harness) -> None:
    shop(h)
    # suppression and silence window
    with h.container.db.begin() as conn:
        bob = contact_store.load_by_email(conn, "bob@shop.fr")
        dan = contact_store.load_by_email(conn, "dan@shop.fr")
        assert bob is not None and dan is not None
        bob.status = "unsubscribed"
        dan.attributes["last_marketing_at"] = (h.clock.now() - timedelta(days=100)).isoformat()
        contact_store.save_many(conn, [bob, dan], h.clock.now())
    config = commerce.CommerceConfig()
    read_only = NoWrites(h.container.db.url)
    try:
        plan = recommendations.plan_campaign(read_only, h.clock.now(), config)
    finally:
        read_only.dispose()
    assert sorted(m["email"] for m in plan.messages) == ["ann@shop.fr", "cat@shop.fr"]
    assert plan.excluded == {"suppressed (unsubscribed)": 1, "silence window": 1}
    assert count_jobs(h.container.db, "send_email") == 0

    queued = recommendations.send_campaign(h.container.db, plan, h.clock.now())
    assert queued == 2 and count_jobs(h.container.db, "send_email") == 2
    with h.container.db.read() as conn:
        payloads = (
            conn.execute(select(jobs_table.c.payload).where(jobs_table.c.kind == "send_email"))
            .scalars()
            .all()
        )
    for payload in payloads:
        assert payload["template"] == "recommendations" and not payload["transactional"]
        assert payload["vars"]["recommendations"][0]["reason"]
    # re-planning now: both just mailed, so the silence window holds them back
    again = recommendations.plan_campaign(h.container.db, h.clock.now(), config)
    assert again.messages == [] and again.excluded["silence window"] == 3
    assert recommendations.send_campaign(h.container.db, plan, h.clock.now()) == 0


@pytest.fixture
def cli_env(h: Harness, monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    monkeypatch.setenv("NURTURE_DATABASE_URL", h.container.db.url)
    return CliRunner()


def test_cli_dry_run_and_rfm(h: Harness, cli_env: CliRunner) -> None:
    from nurture.cli.main import app

    shop(h)
    result = cli_env.invoke(app, ["campaigns", "recommend", "--json"])
    assert result.exit_code == 0, result.output
    assert "dry run: nothing was queued or sent" in result.output
    assert count_jobs(h.container.db, "send_email") == 0
    result = cli_env.invoke(app, ["rfm"])
    assert result.exit_code == 0, result.output
    assert "RFM recomputed for 4 contacts from 4 orders" in result.output


def mailed(
    h: Harness, email: str, key: str, days_ago: int, *, transactional: bool = False, status: str
) -> None:
    """A message row as the delivery worker leaves it."""
    at = h.clock.now() - timedelta(days=days_ago)
    with h.container.db.begin() as conn:
        contact_id = contact_store.id_by_email(conn, email)
        values = {
            "key": key,
            "channel": "email",
            "provider": "console",
            "contact_id": contact_id,
            "to_address": email,
            "template": "newsletter",
            "transactional": transactional,
        }
        claim = message_store.claim(conn, values, at)
        assert claim is not None
        if status == "sent":
            message_store.complete(conn, claim.id, None, None, at)
        elif status != "sending":
            message_store.fail(conn, claim.id, status, "refused", at)


def test_silence_window_reads_marketing_sends_from_the_delivery_log(h: Harness) -> None:
    shop(h)
    mailed(h, "ann@shop.fr", "m1", 100, status="sent")  # marketing, inside 135 days
    mailed(h, "bob@shop.fr", "m2", 5, transactional=True, status="sent")  # receipts don't count
    mailed(h, "cat@shop.fr", "m3", 200, status="sent")  # outside the window
    mailed(h, "cat@shop.fr", "m4", 3, status="failed")  # known not sent
    mailed(h, "dan@shop.fr", "m5", 1, status="sending")  # outcome unknown: counts
    config = commerce.CommerceConfig()
    plan = recommendations.plan_campaign(h.container.db, h.clock.now(), config)
    assert sorted(m["email"] for m in plan.messages) == ["bob@shop.fr", "cat@shop.fr"]
    assert plan.excluded == {"silence window": 2}
    shorter = recommendations.plan_campaign(h.container.db, h.clock.now(), config, silence_days=50)
    assert sorted(m["email"] for m in shorter.messages) == [
        "ann@shop.fr",
        "bob@shop.fr",
        "cat@shop.fr",
    ]


def test_recommendations_api_reuses_the_model_until_it_expires(h: Harness) -> None:
    shop(h)

    def items(ref: str) -> list[tuple[str, str]]:
        r = h.client.get(f"/api/v1/contacts/{ref}/recommendations", headers=AUTH)
        assert r.status_code == 200, r.text
        return [(i["product_key"], i["reason"]) for i in r.json()["items"]]

    assert ("D", "often bought with C") not in items("dan@shop.fr")
    cache = h.app.state.recommendation_models
    assert cache.builds == 1
    # C and D are now bought together twice; cat buys B (what the model offers her)
    send(h, purchase("ann@shop.fr", "o5", 10, [("C", 1, 5), ("D", 1, 5)]))
    send(h, purchase("bob@shop.fr", "o6", 10, [("C", 1, 5), ("D", 1, 5)]))
    send(h, purchase("cat@shop.fr", "o7", 20, [("B", 1, 20)]))
    h.process()
    # within the TTL the shared model is reused, but a contact's own purchases count at once
    assert ("D", "often bought with C") not in items("dan@shop.fr")
    assert "B" not in [key for key, _ in items("cat@shop.fr")]
    assert cache.builds == 1
    assert isinstance(h.clock, VirtualClock)
    h.clock.advance(timedelta(seconds=commerce.CommerceConfig().recommendations.model_ttl_seconds))
    assert items("dan@shop.fr")[0] == ("D", "often bought with C")
    assert cache.builds == 2
