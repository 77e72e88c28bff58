"""The event processor: contacts, timeline, ordering, retries and parking, several workers."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import timedelta

import pytest
from sqlalchemy import func, select

from nurture.clock import VirtualClock
from nurture.core.events import ContactRef, InboundEvent
from nurture.core.retry import RetryPolicy
from nurture.database.engine import Database
from nurture.intake.context import ProcessingContext
from nurture.intake.ingest import Ingestor
from nurture.intake.process import EventProcessor
from nurture.schema.tables import contacts, events, timeline
from nurture.storage import contacts as contact_store
from nurture.storage import events as event_store


@pytest.fixture
def ingestor(db: Database, clock: VirtualClock) -> Iterator[Ingestor]:
    ing = Ingestor(db, clock, partitions=8)
    yield ing
    ing.close()


def ev(
    key: str, ref: ContactRef | None, type_: str = "page.viewed", **data: object
) -> InboundEvent:
    return InboundEvent("track", type_, key, ref, dict(data))


class Recorder:
    name = "recorder"

    def __init__(self, fail_on: set[str] | None = None) -> None:
        self.seen: list[tuple[int, str]] = []
        self.fail_on = fail_on or set()
        self.lock = threading.Lock()

    def apply(self, ctx: ProcessingContext) -> None:
        if ctx.event.data.get("tag") in self.fail_on:
            raise RuntimeError("boom " + str(ctx.event.data["tag"]))
        with self.lock:
            self.seen.append((ctx.event.id, str(ctx.event.data.get("tag"))))
        if ctx.contact is not None and ctx.event.data.get("tag"):
            ctx.contact.add_tag(str(ctx.event.data["tag"]))
            ctx.note("tag.added", {"tag": ctx.event.data["tag"]})


def test_contact_created_updated_and_timeline_written(
    db: Database, clock: VirtualClock, ingestor: Ingestor
) -> None:
    ann = ContactRef(email="ann@example.com", traits={"first_name": "Ann"})
    ingestor.store([ev("1", ann, tag="a"), ev("2", ann, tag="b")])
    proc = EventProcessor(db, clock, [Recorder()], partitions=8)
    assert proc.drain() == 2
    with db.read() as conn:
        state = contact_store.load_by_email(conn, "ann@example.com")
        assert state is not None
        assert state.tags == ["a", "b"] and state.first_name == "Ann"
        kinds = [r.kind for r in conn.execute(select(timeline.c.kind).order_by(timeline.c.id))]
        assert kinds == ["contact.created", "event", "tag.added", "event", "tag.added"]
        statuses = {r.status for r in conn.execute(select(events.c.status))}
        assert statuses == {"processed"}


def test_identity_first_then_email_merges_into_one_contact(
    db: Database, clock: VirtualClock, ingestor: Ingestor
) -> None:
    ingestor.store([ev("1", ContactRef(identities={"client_code": "C1"}))])
    proc = EventProcessor(db, clock, [], partitions=8)
    proc.drain()
    ingestor.store([ev("2", ContactRef(email="c1@shop.fr", identities={"client_code": "C1"}))])
    ingestor.store([ev("3", ContactRef(email="c1@shop.fr"))])
    proc.drain()
    with db.read() as conn:
        assert conn.execute(select(func.count()).select_from(contacts)).scalar_one() == 1
        state = contact_store.load_by_email(conn, "c1@shop.fr")
        assert state is not None and state.identities == {"client_code": "C1"}


def test_events_of_a_contact_are_processed_in_arrival_order(
    db: Database, clock: VirtualClock, ingestor: Ingestor
) -> None:
    refs = [ContactRef(email=f"u{i}@x.co") for i in range(5)]
    for n in range(40):
        ingestor.store([ev(f"k{n}", refs[n % 5], tag=str(n))])
    rec = Recorder()
    EventProcessor(db, clock, [rec], batch_size=7, partitions=8).drain()
    assert [eid for eid, _ in rec.seen] == sorted(eid for eid, _ in rec.seen)
    assert len(rec.seen) == 40


def test_failing_event_is_retried_then_parked_without_blocking_others(
    db: Database, clock: VirtualClock, ingestor: Ingestor
) -> None:
    ref = ContactRef(email="z@x.co")
    ingestor.store([ev("1", ref, tag="ok1"), ev("2", ref, tag="bad"), ev("3", ref, tag="ok2")])
    rec = Recorder(fail_on={"bad"})
    policy = RetryPolicy(base_seconds=10, factor=2, max_attempts=3, jitter=0)
    proc = EventProcessor(db, clock, [rec], partitions=8, retry=policy)
    proc.drain()
    # The batch was redone with savepoints, so the recorder (outside the transaction) saw ok1
    # twice; what was committed is what matters.
    assert {t for _, t in rec.seen} == {"ok1", "ok2"}
    with db.read() as conn:
        state = contact_store.load_by_email(conn, "z@x.co")
        assert state is not None and state.tags == ["ok1", "ok2"]  # the failed event left no trace
        row = event_store.get(conn, 2)
        assert row is not None
        assert row["status"] == "pending" and row["attempts"] == 1
        assert "boom bad" in row["error"]
    for _ in range(3):
        clock.advance(timedelta(hours=1))
        proc.drain()
    with db.read() as conn:
        row = event_store.get(conn, 2)
        assert row is not None and row["status"] == "failed" and row["attempts"] == 3
    # Fixed and replayed, it goes through.
    rec.fail_on.clear()
    with db.begin() as conn:
        assert event_store.requeue(conn, 2, clock.now())
    proc.drain()
    with db.read() as conn:
        state = contact_store.load_by_email(conn, "z@x.co")
        assert state is not None and state.tags == ["ok1", "ok2", "bad"]


def test_derived_events_are_queued_and_processed_after_their_cause(
    db: Database, clock: VirtualClock, ingestor: Ingestor
) -> None:
    class Deriver:
        name = "deriver"

        def apply(self, ctx: ProcessingContext) -> None:
            if ctx.event.type == "page.viewed":
                ctx.derive("score.crossed", {"threshold": 80})

    rec = Recorder()
    ingestor.store([ev("1", ContactRef(email="d@x.co"))])
    EventProcessor(db, clock, [Deriver(), rec], partitions=8).drain()
    with db.read() as conn:
        rows = conn.execute(
            select(events.c.type, events.c.depth, events.c.parent_id, events.c.status).order_by(
                events.c.id
            )
        ).all()
    assert [tuple(r) for r in rows] == [
        ("page.viewed", 0, None, "processed"),
        ("score.crossed", 1, 1, "processed"),
    ]


def test_unattributable_event_is_processed_without_contact(
    db: Database, clock: VirtualClock, ingestor: Ingestor
) -> None:
    ingestor.store([ev("1", None)])
    EventProcessor(db, clock, [Recorder()], partitions=8).drain()
    with db.read() as conn:
        assert conn.execute(select(func.count()).select_from(contacts)).scalar_one() == 0
        assert conn.execute(select(events.c.status)).scalar_one() == "processed"


@pytest.mark.postgres
def test_two_workers_share_partitions_and_never_process_an_event_twice(
    pg_url: str, clock: VirtualClock
) -> None:
    db = Database(pg_url)
    ing = Ingestor(db, clock, partitions=16)
    for n in range(600):
        ing.store([ev(f"k{n}", ContactRef(email=f"u{n % 37}@x.co"), tag=str(n))])
    ing.close()
    rec = Recorder()
    workers = [
        EventProcessor(Database(pg_url), clock, [rec], batch_size=25, partitions=16)
        for _ in range(3)
    ]
    threads = [threading.Thread(target=w.drain) for w in workers]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    ids = [eid for eid, _ in rec.seen]
    assert len(ids) == len(set(ids)) == 600
    # Per contact, arrival order held even with three workers.
    with db.read() as conn:
        contact_of = dict(conn.execute(select(events.c.id, events.c.contact_key)).all())
    per_contact: dict[str, list[int]] = {}
    for eid in ids:
        per_contact.setdefault(contact_of[eid], []).append(eid)
    assert all(seq == sorted(seq) for seq in per_contact.values())
    for w in workers:
        w.db.dispose()
    db.dispose()
