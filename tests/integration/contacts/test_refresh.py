"""Segments and lead scores follow changes made outside an event: a re-subscribe queues
``contact.changed`` for its contact, the full RFM pass asks for a ``rules_refresh`` job that
queues it for every contact whose segments or score are stale, and the rules step recomputes,
ledgers and derives exactly as for any event (SQLite and PostgreSQL)."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import delete

from nurture.automation import step as rule_service
from nurture.automation.step import RulesStep
from nurture.bootstrap import Container
from nurture.clock import VirtualClock
from nurture.commerce import purchases as commerce
from nurture.config import Settings
from nurture.contacts import suppression
from nurture.contacts.refresh import CHANGED, Checker, refresh_page
from nurture.database.engine import Database
from nurture.intake.process import EventProcessor
from nurture.jobs import HandlerRegistry, JobWorker
from nurture.pack import DEFAULTS_DIR, load_pack
from nurture.rules.book import load
from nurture.schema.tables import orders
from nurture.storage import contacts as contact_store
from nurture.storage import events as event_store
from nurture.storage import jobs as job_store
from nurture.storage import scores as score_store
from nurture.storage import timeline as timeline_store
from tests.integration.automation.test_step import contact, insert


def shop(db: Database, clock: VirtualClock) -> EventProcessor:
    steps = [commerce.build_purchase_step(DEFAULTS_DIR), RulesStep(load(DEFAULTS_DIR))]
    return EventProcessor(db, clock, steps)


def events_of(db: Database, type_: str) -> list[dict[str, Any]]:
    with db.read() as conn:
        rows = event_store.search(conn, type_=type_, limit=500)
        return [e for e in (event_store.get(conn, r["id"]) for r in rows) if e is not None]


@pytest.fixture
def worker(db: Database, clock: VirtualClock, database_url: str) -> JobWorker:
    settings = Settings(database_url=database_url, automation_dir=DEFAULTS_DIR)
    registry = HandlerRegistry()
    rule_service.register(registry, db, DEFAULTS_DIR)
    return JobWorker(Container(settings=settings, db=db, clock=clock), registry)


def full_pass(db: Database, clock: VirtualClock, worker: JobWorker) -> None:
    """``nurture rfm`` / the nightly job, then the refresh job it asks for."""
    commerce.recompute_all(db, clock.now(), commerce.load_config(load_pack(DEFAULTS_DIR)))
    with db.read() as conn:
        kinds = [j["kind"] for j in job_store.search(conn, status="scheduled")]
    assert "rules_refresh" in kinds
    assert asyncio.run(worker.drain()) == 1


def test_the_full_rfm_pass_moves_segments_and_scores_through_the_rules_step(
    db: Database, clock: VirtualClock, worker: JobWorker
) -> None:
    processor = shop(db, clock)
    insert(db, clock, "purchase.completed", email="ann@example.com", amount=40, order_id="A1")
    for n in range(3):
        insert(
            db, clock, "purchase.completed", email="bob@example.com", amount=90, order_id=f"B{n}"
        )
    processor.drain()
    # The full pass ranks ann against every buyer (the purchase scored her against the last
    # baseline): her figures move, and with them her segment and score.
    full_pass(db, clock, worker)
    assert [e["canonical"]["contact"]["email"] for e in events_of(db, CHANGED)] == [
        "ann@example.com"
    ]
    processor.drain()
    ann = contact(db, "ann@example.com")
    assert ann.segments["value"] == "At Risk"
    score_before = ann.score
    # Run again a minute later: everything is up to date, nothing is queued.
    clock.advance(timedelta(minutes=1))
    full_pass(db, clock, worker)
    assert len(events_of(db, CHANGED)) == 1

    # 200 days later one order makes ann Churn and costs her 30 points of recency; bob's
    # purchase points keep his clamped score at 100 and his segment does not move: not queued.
    clock.advance(timedelta(days=200))
    full_pass(db, clock, worker)
    queued = events_of(db, CHANGED)[:-1]  # newest first
    assert [e["canonical"]["contact"]["email"] for e in queued] == ["ann@example.com"]
    assert {e["canonical"]["data"]["reason"] for e in queued} == {"rfm"}
    processor.drain()

    ann = contact(db, "ann@example.com")
    assert ann.segments["value"] == "Churn"
    assert ann.score < score_before
    changed = [e["canonical"]["data"] for e in events_of(db, "segment.changed")]
    assert {"segmentation": "value", "from": "At Risk", "to": "Churn"} in changed
    with db.read() as conn:
        notes = timeline_store.for_contact(conn, ann.id, limit=1000)
        ledger = score_store.for_contact(conn, ann.id)
    kinds = [n["kind"] for n in notes]
    assert "segment.changed" in kinds and "score.changed" in kinds
    refresh = next(e for e in queued if e["canonical"]["contact"]["email"] == "ann@example.com")
    profile = [r for r in ledger if r["event_id"] == refresh["id"]]
    assert [r["component"] for r in profile] == ["profile"]
    assert profile[0]["delta"] == ann.score - score_before

    # Run again: all up to date, nothing queued.
    clock.advance(timedelta(minutes=1))
    full_pass(db, clock, worker)
    assert len(events_of(db, CHANGED)) == 2


def test_a_contact_whose_orders_are_gone_loses_its_value_segment(
    db: Database, clock: VirtualClock, worker: JobWorker
) -> None:
    processor = shop(db, clock)
    insert(db, clock, "purchase.completed", email="ann@example.com", amount=40, order_id="A1")
    insert(db, clock, "purchase.completed", email="bob@example.com", amount=90, order_id="B1")
    processor.drain()
    ann = contact(db, "ann@example.com")
    assert "value" in ann.segments
    with db.begin() as conn:
        conn.execute(delete(orders).where(orders.c.contact_id == ann.id))
    full_pass(db, clock, worker)
    processor.drain()
    ann = contact(db, "ann@example.com")
    assert ann.rfm is None
    assert "value" not in ann.segments
    assert any(
        e["canonical"]["data"]["to"] is None and e["canonical"]["contact"]["email"] == ann.email
        for e in events_of(db, "segment.changed")
    )


def test_a_resubscribe_recomputes_segments_that_read_the_status(
    db: Database, clock: VirtualClock, tmp_path: Path
) -> None:
    (tmp_path / "rules.yaml").write_text(
        "rules:\n"
        "  - id: out\n"
        "    on: email.unsubscribed\n"
        "    do:\n"
        "      - suppress: unsubscribed\n"
        "segments:\n"
        "  - id: mailable\n"
        "    values:\n"
        "      - value: 'yes'\n"
        "        if: contact.status == 'subscribed'\n"
        "      - value: 'no'\n"
    )
    processor = EventProcessor(db, clock, [RulesStep(load(tmp_path))])
    insert(db, clock, "email.unsubscribed")
    processor.drain()
    state = contact(db)
    assert (state.status, state.segments) == ("unsubscribed", {"mailable": "no"})
    with db.begin() as conn:
        suppression.resubscribe(conn, state.id, clock.now(), by="api:test")
    assert len(events_of(db, CHANGED)) == 1
    processor.drain()
    state = contact(db)
    assert (state.status, state.segments) == ("subscribed", {"mailable": "yes"})
    moves = [e["canonical"]["data"] for e in events_of(db, "segment.changed")]
    assert {"segmentation": "mailable", "from": "no", "to": "yes"} in moves


def test_the_refresh_pages_and_never_queues_twice(db: Database, clock: VirtualClock) -> None:
    """A page at a time; a contact already waiting for its refresh is not queued again, and a
    job that runs twice queues nothing twice."""
    for n in range(5):
        insert(db, clock, "page.viewed", email=f"c{n}@example.com", url="/")
    EventProcessor(db, clock, []).drain()
    with db.begin() as conn:  # figures written behind the rules' back, as the RFM pass does
        for n in range(5):
            state = contact_store.load_by_email(conn, f"c{n}@example.com")
            assert state is not None
            state.rfm = {"frequency": 1, "score": 2.0, "last_order_at": clock.now().isoformat()}
            contact_store.save(conn, state, clock.now())
    checker = Checker(load(DEFAULTS_DIR))
    with db.begin() as conn:  # all five are stale: no value segment, score 50 instead of 75
        after, queued = refresh_page(conn, checker, 0, clock.now(), "test", "job-1", limit=2)
        assert queued == 2
        after, queued = refresh_page(conn, checker, after or 0, clock.now(), "test", "job-1", 2)
        assert queued == 2
        last, queued = refresh_page(conn, checker, after or 0, clock.now(), "test", "job-1", 2)
        assert (last, queued) == (None, 1)
        assert refresh_page(conn, checker, 0, clock.now(), "test", "job-2", limit=10)[1] == 0
    assert len(events_of(db, CHANGED)) == 5
    EventProcessor(db, clock, [RulesStep(load(DEFAULTS_DIR))]).drain()
    states = [contact(db, f"c{n}@example.com") for n in range(5)]
    assert {(c.score, c.segments["value"]) for c in states} == {(75, "Standard")}
    with db.begin() as conn:  # up to date now
        assert refresh_page(conn, checker, 0, clock.now(), "test", "job-3", limit=10)[1] == 0
