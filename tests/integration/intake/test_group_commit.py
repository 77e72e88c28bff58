"""Group commit: requests that wait together share one transaction, and share its fate.

The ingestor runs with one writer here so the grouping is deterministic: the first submission's
commit is held open (its ``on_commit`` hook waits on a gate) while the others arrive; they queue
on the event loop and go to the writer together once it is free.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Sequence
from typing import Any

import pytest
from sqlalchemy import Connection, exc, func, select

from nurture.clock import VirtualClock
from nurture.core.events import ContactRef, InboundEvent
from nurture.database.engine import Database
from nurture.errors import StorageUnavailable
from nurture.intake import ingest as ingest_module
from nurture.intake.ingest import Ingestor, IngestOutcome
from nurture.schema.tables import events


def ev(key: str) -> InboundEvent:
    return InboundEvent("track", "page.viewed", key, ContactRef(email=f"{key}@b.co"), {"k": key})


def stored_keys(db: Database) -> list[str]:
    with db.read() as conn:
        return sorted(r[0] for r in conn.execute(select(events.c.dedupe_key)))


class Gate:
    """Holds the first commit's writer until released (``on_commit`` runs after the commit)."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()
        self.calls = 0

    def __call__(self) -> None:
        self.calls += 1
        if self.calls == 1:
            self.entered.set()
            assert self.release.wait(30)


async def first_then_group(
    ingestor: Ingestor, gate: Gate, keys: Sequence[str]
) -> tuple[IngestOutcome, list[IngestOutcome | BaseException]]:
    """Submit ``first`` alone, then ``keys`` while its commit is held; return all answers."""
    first = asyncio.create_task(ingestor.submit([ev("first")], b"{}", "application/json"))
    await asyncio.to_thread(gate.entered.wait, 30)
    rest = [asyncio.create_task(ingestor.submit([ev(k)], b"{}", "application/json")) for k in keys]
    await asyncio.sleep(0)  # every task has queued its rows on the loop
    gate.release.set()
    answers = await asyncio.gather(*rest, return_exceptions=True)
    return await first, answers


def test_requests_waiting_together_share_one_commit(db: Database, clock: VirtualClock) -> None:
    gate = Gate()
    ingestor = Ingestor(db, clock, writers=1, on_commit=gate)
    keys = [f"k{i}" for i in range(10)]
    try:
        first, answers = asyncio.run(first_then_group(ingestor, gate, keys))
    finally:
        ingestor.close()
    assert first.status_code == 202
    assert all(isinstance(a, IngestOutcome) and a.status_code == 202 for a in answers)
    ids = [a.accepted[0] for a in answers if isinstance(a, IngestOutcome)]
    assert len(set(ids)) == len(keys)  # each request gets its own row's id
    assert ingestor.commits == 2  # the first alone, then all ten in one transaction
    assert stored_keys(db) == sorted(f"track:{k}" for k in ["first", *keys])


def test_duplicates_within_a_group_get_the_stored_id(db: Database, clock: VirtualClock) -> None:
    gate = Gate()
    ingestor = Ingestor(db, clock, writers=1, on_commit=gate)
    try:
        _, answers = asyncio.run(first_then_group(ingestor, gate, ["same", "same", "first"]))
    finally:
        ingestor.close()
    outcomes = [a for a in answers if isinstance(a, IngestOutcome)]
    assert [o.status_code for o in outcomes] == [202, 200, 200]
    assert outcomes[1].duplicates == outcomes[0].accepted
    assert ingestor.commits == 2


def failing_insert(
    real: Callable[[Connection, Sequence[dict[str, Any]]], dict[str, int]],
    fails: Callable[[Sequence[dict[str, Any]]], Exception | None],
) -> Callable[[Connection, Sequence[dict[str, Any]]], dict[str, int]]:
    """Raise if ``fails`` says so, as the database would. In a transaction, after inserting for
    real: the transaction has rows to roll back. In autocommit (the PostgreSQL writer's one
    statement, committed on its own), instead of inserting: a statement that fails commits
    nothing."""

    def insert(conn: Connection, rows: Sequence[dict[str, Any]]) -> dict[str, int]:
        error = fails(rows)
        if (
            error is not None
            and conn.get_execution_options().get("isolation_level") == "AUTOCOMMIT"
        ):
            raise error
        out = real(conn, rows)
        if error is not None:
            raise error
        return out

    return insert


def test_a_failed_group_commit_refuses_every_request_and_stores_none(
    db: Database, clock: VirtualClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    def locked(rows: Sequence[dict[str, Any]]) -> Exception | None:
        if len(rows) > 1:  # the group, not the first request
            return exc.OperationalError("COMMIT", {}, Exception("database is locked"))
        return None

    monkeypatch.setattr(
        ingest_module.event_store,
        "insert_new",
        failing_insert(ingest_module.event_store.insert_new, locked),
    )
    gate = Gate()
    ingestor = Ingestor(db, clock, writers=1, on_commit=gate)
    keys = [f"k{i}" for i in range(5)]
    try:
        first, answers = asyncio.run(first_then_group(ingestor, gate, keys))
        assert first.status_code == 202
        assert all(isinstance(a, StorageUnavailable) for a in answers)  # 503, senders retry
        assert stored_keys(db) == ["track:first"]
        # the senders' retries go through once the database accepts writes again
        monkeypatch.undo()
        retried = [ingestor.store([ev(k)]) for k in keys]
    finally:
        ingestor.close()
    assert all(r.status_code == 202 for r in retried)
    assert len(stored_keys(db)) == 1 + len(keys)


def test_a_row_the_database_refuses_fails_only_its_own_request(
    db: Database, clock: VirtualClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    def poisoned(rows: Sequence[dict[str, Any]]) -> Exception | None:
        if any(r["dedupe_key"] == "track:bad" for r in rows):
            return exc.DataError("INSERT", {}, Exception("unsupported Unicode escape sequence"))
        return None

    monkeypatch.setattr(
        ingest_module.event_store,
        "insert_new",
        failing_insert(ingest_module.event_store.insert_new, poisoned),
    )
    gate = Gate()
    ingestor = Ingestor(db, clock, writers=1, on_commit=gate)
    try:
        _, answers = asyncio.run(first_then_group(ingestor, gate, ["a", "bad", "b"]))
    finally:
        ingestor.close()
    assert isinstance(answers[0], IngestOutcome) and answers[0].status_code == 202
    assert isinstance(answers[1], exc.DataError)
    assert isinstance(answers[2], IngestOutcome) and answers[2].status_code == 202
    assert stored_keys(db) == ["track:a", "track:b", "track:first"]


def test_a_lone_request_is_committed_without_waiting_for_company(
    db: Database, clock: VirtualClock
) -> None:
    ingestor = Ingestor(db, clock, writers=1)

    async def one() -> IngestOutcome:
        return await ingestor.submit([ev("alone")], b"{}", "application/json")

    try:
        out = asyncio.run(one())
    finally:
        ingestor.close()
    assert out.status_code == 202 and ingestor.commits == 1
    with db.read() as conn:
        assert conn.execute(select(func.count()).select_from(events)).scalar_one() == 1


def test_submissions_from_two_event_loops(db: Database, clock: VirtualClock) -> None:
    """Each loop gathers its own submissions; both use the same writers."""
    ingestor = Ingestor(db, clock, writers=1)
    results: list[IngestOutcome] = []

    def loop_thread(prefix: str) -> None:
        async def many() -> list[IngestOutcome]:
            return await asyncio.gather(
                *(ingestor.submit([ev(f"{prefix}{i}")], None, None) for i in range(20))
            )

        results.extend(asyncio.run(many()))

    threads = [threading.Thread(target=loop_thread, args=(p,)) for p in ("x", "y")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    ingestor.close()
    assert len(results) == 40 and all(r.status_code == 202 for r in results)
    assert len(stored_keys(db)) == 40
