"""Durable intake: one row per dedupe key, whatever the interleaving; nothing half-stored."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select

from nurture.clock import VirtualClock
from nurture.core.events import ContactRef, InboundEvent
from nurture.database.engine import Database
from nurture.errors import StorageUnavailable
from nurture.intake.ingest import Ingestor
from nurture.schema.tables import events


def ev(key: str, email: str = "a@b.co") -> InboundEvent:
    return InboundEvent("track", "page.viewed", key, ContactRef(email=email), {"k": key})


@pytest.fixture
def ingestor(db: Database, clock: VirtualClock) -> Iterator[Ingestor]:
    ing = Ingestor(db, clock, partitions=8)
    yield ing
    ing.close()


def count(db: Database) -> int:
    with db.read() as conn:
        return int(conn.execute(select(func.count()).select_from(events)).scalar_one())


def test_new_then_duplicate(ingestor: Ingestor, db: Database) -> None:
    first = ingestor.store([ev("a"), ev("b")], b"[]", "application/json")
    assert first.status_code == 202 and len(first.accepted) == 2
    again = ingestor.store([ev("a")], b"{}", "application/json")
    assert again.status_code == 200
    assert again.body() == {"status": "duplicate", "event_ids": [first.accepted[0]]}
    mixed = ingestor.store([ev("a"), ev("c")], None, None)
    assert mixed.status_code == 202
    assert mixed.duplicates == [first.accepted[0]] and len(mixed.accepted) == 1
    assert count(db) == 3


def test_same_key_twice_in_one_request_stores_once(ingestor: Ingestor, db: Database) -> None:
    out = ingestor.store([ev("x"), ev("x")], None, None)
    assert len(out.accepted) == 1 and out.duplicates == out.accepted
    assert count(db) == 1


def test_concurrent_deliveries_of_one_event_store_exactly_one_row(
    db: Database, clock: VirtualClock
) -> None:
    # Two processes' worth of writers: separate ingestors race on the UNIQUE constraint.
    ingestors = [Ingestor(db, clock, partitions=8) for _ in range(2)]
    results: list[list[int]] = []
    barrier = threading.Barrier(8)

    def deliver(i: int) -> None:
        barrier.wait()
        out = ingestors[i % 2].store([ev("same")], b"{}", "application/json")
        results.append(out.accepted)

    threads = [threading.Thread(target=deliver, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for ing in ingestors:
        ing.close()
    assert sum(len(r) for r in results) == 1
    assert count(db) == 1


def test_raw_body_kept_for_single_events_and_per_item_for_arrays(
    ingestor: Ingestor, db: Database
) -> None:
    single = ingestor.store([ev("s")], b'{"exact": "bytes"}', "application/json")
    with db.read() as conn:
        raw = conn.execute(select(events.c.raw).where(events.c.id == single.accepted[0]))
        assert bytes(raw.scalar_one()) == b'{"exact": "bytes"}'


def test_locked_database_refuses_with_storage_unavailable_and_stores_nothing(
    sqlite_url: str, clock: VirtualClock
) -> None:
    db = Database(sqlite_url, busy_timeout_ms=50)
    ing = Ingestor(db, clock)
    blocker = Database(sqlite_url)
    # BEGIN IMMEDIATE in the blocker holds the write lock.
    with blocker.begin(), pytest.raises(StorageUnavailable):
        ing.store([ev("locked")], None, None)
    assert count(db) == 0
    assert ing.store([ev("locked")], None, None).status_code == 202  # the sender's retry
    assert count(db) == 1
    ing.close()
    db.dispose()
    blocker.dispose()


def test_unreachable_postgres_is_storage_unavailable(clock: VirtualClock) -> None:
    db = Database("postgresql+psycopg://nobody@127.0.0.1:1/none")
    ing = Ingestor(db, clock)
    with pytest.raises(StorageUnavailable):
        ing.store([ev("x")], None, None)
    ing.close()


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    deliveries=st.lists(
        st.lists(st.sampled_from(["k1", "k2", "k3", "k4"]), min_size=1, max_size=4),
        min_size=1,
        max_size=12,
    ),
    split=st.integers(min_value=1, max_value=4),
)
def test_any_interleaving_of_duplicates_stores_each_key_once(
    sqlite_url: str, clock: VirtualClock, deliveries: list[list[str]], split: int
) -> None:
    db = Database(sqlite_url)
    with db.begin() as conn:
        conn.execute(events.delete())
    ings = [Ingestor(db, clock) for _ in range(split)]
    accepted: list[int] = []
    lock = threading.Lock()

    def run(i: int, keys: list[str]) -> None:
        out = ings[i % split].store([ev(k) for k in keys], None, None)
        with lock:
            accepted.extend(out.accepted)

    threads = [threading.Thread(target=run, args=(i, d)) for i, d in enumerate(deliveries)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for ing in ings:
        ing.close()
    distinct = {k for d in deliveries for k in d}
    assert len(accepted) == len(distinct)
    with db.read() as conn:
        keys = [r[0] for r in conn.execute(select(events.c.dedupe_key))]
    assert sorted(keys) == sorted(f"track:{k}" for k in distinct)
    db.dispose()
