"""``POST /api/v1/events``: the Power Automate round trip's inbound half.

A flow posts a canonical event with an API key; with ``?wait=true`` the answer carries the
decisions of the CRM prototype's purchase rule (score +50, thank-you e-mail after 5 min,
follow-up task after 24 h) with their due times, so the flow can act on them.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import pytest

from nurture.bootstrap import build_steps
from nurture.clock import VirtualClock
from nurture.config import Settings
from nurture.intake.context import ProcessingContext
from nurture.intake.process import EventProcessor
from nurture.storage import api_keys
from nurture.testing import Harness, harness
from nurture.web.events_api import join_background

KEY = "nk_events_api"
AUTH = {"authorization": f"Bearer {KEY}"}
PURCHASE = {
    "id": "order-1001",
    "type": "purchase.completed",
    "contact": {"email": "buyer@example.com", "first_name": "Ann"},
    "data": {"amount": 99, "currency": "EUR", "order_id": "1001"},
}


@pytest.fixture
def h(make_settings: Callable[..., Settings], clock: VirtualClock) -> Iterator[Harness]:
    with harness(make_settings(api_wait_seconds=30), clock) as hh:
        with hh.container.db.begin() as conn:
            api_keys.create(conn, "flow", KEY, clock.now())
        yield hh


def post(h: Harness, payload: Any, query: str = "") -> Any:
    return h.client.post(f"/api/v1/events{query}", json=payload, headers=AUTH)


def test_wait_answers_with_the_purchase_rule_decisions_and_due_times(h: Harness) -> None:
    now = h.clock.now()
    r = post(h, PURCHASE, "?wait=true")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["status"] == "processed"
    [result] = body["results"]
    assert result["status"] == "processed"
    assert result["event_id"] == body["event_ids"][0]

    [decision] = [d for d in result["decisions"] if d["rule_id"] == "purchase"]
    actions = {a["action"]: a for a in decision["actions"]}
    assert actions["score"]["score"] == 50 and actions["score"]["immediate"] is True
    assert actions["send_email"]["send_email"] == "thank_you"
    assert actions["send_email"]["due_at"] == (now + timedelta(minutes=5)).isoformat()
    assert actions["task"]["task"] == "Follow-up call"
    assert actions["task"]["due_at"] == (now + timedelta(hours=24)).isoformat()
    assert result["score"]["to"] - result["score"]["from"] >= 50

    scheduled = {s["action"]: s for s in result["scheduled"]}
    assert set(scheduled) == {"send_email", "task"}
    assert scheduled["send_email"]["template"] == "thank_you"
    assert scheduled["send_email"]["rule_id"] == "purchase"
    assert scheduled["send_email"]["status"] == "scheduled"
    assert scheduled["send_email"]["due_at"] == (now + timedelta(minutes=5)).isoformat()
    assert scheduled["task"]["title"] == "Follow-up call"
    assert scheduled["task"]["due_at"] == (now + timedelta(hours=24)).isoformat()

    # The purchase lifted the score past 80: the derived score.crossed event was processed in
    # the same call, and the VIP rule's decisions come back with it.
    [crossed] = [d for d in result["derived"] if d["type"] == "score.crossed"]
    assert crossed["status"] == "processed" and crossed["parent_id"] == result["event_id"]
    [vip] = crossed["decisions"]
    assert vip["rule_id"] == "high-score"
    assert [a["action"] for a in vip["actions"]] == ["send_email", "task"]
    vip_jobs = {s["action"]: s for s in crossed["scheduled"]}
    assert vip_jobs["send_email"]["template"] == "vip_offer"
    assert vip_jobs["send_email"]["due_at"] == now.isoformat()
    assert vip_jobs["task"]["title"] == "Call this VIP lead"
    assert vip_jobs["task"]["task_kind"] == "call"
    assert vip_jobs["task"]["due_at"] == (now + timedelta(hours=2)).isoformat()
    assert all(d["status"] == "processed" for d in result["derived"])

    # The same flow run retried (same event id): the stored outcome, nothing scheduled twice.
    again = post(h, PURCHASE, "?wait=true").json()
    assert again["event_ids"] == body["event_ids"]
    assert again["results"][0]["scheduled"] == result["scheduled"]
    assert again["results"][0]["derived"] == result["derived"]
    outcome = h.client.get(f"/api/v1/events/{body['event_ids'][0]}/outcome", headers=AUTH)
    assert outcome.json()["decisions"] == result["decisions"]


def test_a_small_purchase_fires_nothing(h: Harness) -> None:
    small = {**PURCHASE, "id": "order-1002", "data": {"amount": 20}}
    result = post(h, small, "?wait=true").json()["results"][0]
    assert result["status"] == "processed"
    assert [d["rule_id"] for d in result["decisions"]] == []
    assert result["scheduled"] == []
    # A new contact with a first order: contact.created and segment.changed, firing no rule.
    derived = {d["type"]: d for d in result["derived"]}
    assert set(derived) == {"contact.created", "segment.changed"}
    assert all(d["status"] == "processed" and d["decisions"] == [] for d in derived.values())


def test_without_wait_the_event_is_stored_for_the_worker(h: Harness) -> None:
    r = post(h, [PURCHASE, {**PURCHASE, "id": "order-2"}])
    assert r.status_code == 202
    ids = r.json()["event_ids"]
    assert len(ids) == 2
    pending = h.client.get(f"/api/v1/events/{ids[0]}/outcome", headers=AUTH).json()
    assert pending["status"] == "pending" and pending["decisions"] == []
    h.process()
    done = h.client.get(f"/api/v1/events/{ids[0]}/outcome", headers=AUTH).json()
    assert done["status"] == "processed"
    assert [d["rule_id"] for d in done["decisions"]] == ["purchase"]


def test_api_key_and_body_are_checked(h: Harness) -> None:
    assert h.client.post("/api/v1/events", json=PURCHASE).status_code == 401
    bad = h.client.post("/api/v1/events", json=PURCHASE, headers={"authorization": "Bearer x"})
    assert bad.status_code == 401
    r = post(h, {"type": "Not A Type", "contact": {}})
    assert r.status_code == 422
    fields = {e["field"] for e in r.json()["errors"]}
    assert {"type", "contact"} <= fields
    r = h.client.post(
        "/api/v1/events", content=b"{", headers={**AUTH, "content-type": "application/json"}
    )
    assert r.status_code == 400
    assert h.client.get("/api/v1/events/999999/outcome", headers=AUTH).status_code == 404


class _Gate:
    """A processing step that holds events (of ``types``, or all) until the test lets go."""

    name = "gate"

    def __init__(self, types: tuple[str, ...] = ()) -> None:
        self.types = types
        self.entered = threading.Event()
        self.release = threading.Event()

    def apply(self, ctx: ProcessingContext) -> None:
        if self.types and ctx.event.type not in self.types:
            return
        self.entered.set()
        self.release.wait(timeout=60)


def test_wait_answers_202_with_the_event_id_when_processing_is_slow(
    make_settings: Callable[..., Settings], clock: VirtualClock
) -> None:
    with harness(make_settings(api_wait_seconds=0.2), clock) as h:
        with h.container.db.begin() as conn:
            api_keys.create(conn, "flow", KEY, clock.now())
        gate = _Gate()
        state = h.app.state.nurture
        state.sources["__events_api_processor__"] = EventProcessor(
            h.container.db, h.container.clock, [gate]
        )
        try:
            r = post(h, PURCHASE, "?wait=true")
            assert gate.entered.is_set()
        finally:
            gate.release.set()
            join_background(state)
        assert r.status_code == 202, r.text
        body = r.json()
        assert body["status"] == "accepted"
        assert len(body["event_ids"]) == 1
        assert "longer than 0.2s" in body["detail"]


def test_a_derived_event_still_processing_at_the_limit_is_reported_pending(
    make_settings: Callable[..., Settings], clock: VirtualClock
) -> None:
    """The purchase itself is processed in time; the score.crossed it caused is held past the
    limit: the answer is 200 with the purchase's decisions and the derived event pending."""
    with harness(make_settings(api_wait_seconds=0.5), clock) as h:
        with h.container.db.begin() as conn:
            api_keys.create(conn, "flow", KEY, clock.now())
        gate = _Gate(("score.crossed",))
        state = h.app.state.nurture
        state.sources["__events_api_processor__"] = EventProcessor(
            h.container.db, h.container.clock, [*build_steps(h.container), gate]
        )
        try:
            r = post(h, PURCHASE, "?wait=true")
            assert gate.entered.is_set()
        finally:
            gate.release.set()
            join_background(state)
        assert r.status_code == 200, r.text
        [result] = r.json()["results"]
        assert result["status"] == "processed"
        assert [d["rule_id"] for d in result["decisions"]] == ["purchase"]
        [crossed] = [d for d in result["derived"] if d["type"] == "score.crossed"]
        assert crossed["status"] == "pending" and crossed["decisions"] == []
        # Once processed, the outcome route shows the VIP decisions.
        outcome = h.client.get(f"/api/v1/events/{result['event_id']}/outcome", headers=AUTH)
        [later] = [d for d in outcome.json()["derived"] if d["type"] == "score.crossed"]
        assert later["status"] == "processed"
        assert [d["rule_id"] for d in later["decisions"]] == ["high-score"]
