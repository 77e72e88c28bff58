"""The pruning pass on SQLite and PostgreSQL: each window, what stays, bounded batches, space."""

from __future__ import annotations

import asyncio
import os
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import orjson
import pytest
from sqlalchemy import insert, select, update

from nurture import jobs
from nurture.bootstrap import Container, build_container, build_processor, build_registry
from nurture.clock import VirtualClock
from nurture.config import Settings
from nurture.core.events import ContactRef, InboundEvent
from nurture.database.engine import Database
from nurture.errors import StorageUnavailable
from nurture.intake.ingest import Ingestor
from nurture.intake.process import EventProcessor
from nurture.jobs import JobContext, JobWorker
from nurture.retention import Policy, Pruner
from nurture.retention.prune import JOB_KIND, ensure_scheduled, run_key, run_pass
from nurture.schema.tables import contacts, enrollments, events, score_ledger, timeline
from nurture.schema.tables import jobs as jobs_table
from nurture.storage import endpoints as endpoint_store
from nurture.storage import events as event_store
from nurture.storage import retention as store
from nurture.storage import rule_fires
from tests.conftest import START
from tests.helpers import new_contact

DAY = timedelta(days=1)


@dataclass
class App:
    container: Container
    ingestor: Ingestor
    processor: EventProcessor

    @property
    def db(self) -> Database:
        return self.container.db

    @property
    def clock(self) -> VirtualClock:
        clock = self.container.clock
        assert isinstance(clock, VirtualClock)
        return clock

    def send(self, key: str, email: str = "ann@example.com", **data: Any) -> Any:
        event = InboundEvent(
            source="api",
            type=str(data.pop("type", "page.viewed")),
            dedupe_key=key,
            contact=ContactRef(email=email),
            data={"url": "/pricing", **data},
        )
        body = orjson.dumps({"id": key, "email": email, "padding": "x" * 300, **data})
        return self.ingestor.store([event], body, "application/json")

    def process(self) -> int:
        return self.processor.drain()


@pytest.fixture
def app(database_url: str) -> Iterator[App]:
    clock = VirtualClock(START)
    container = build_container(Settings(database_url=database_url), clock=clock)
    ingestor = Ingestor(container.db, clock)
    yield App(container, ingestor, build_processor(container))
    ingestor.close()
    container.close()


def raw_of(db: Database) -> dict[int, bool]:
    with db.read() as conn:
        rows = conn.execute(select(events.c.id, events.c.raw.is_not(None).label("raw")))
        return {r.id: bool(r.raw) for r in rows}


def prune(app: App, policy: Policy, **kw: Any) -> Any:
    return Pruner(app.db, policy, pause=lambda s: None, **kw).run(app.clock.now())


RAW_ONLY = Policy(raw_days=30, job_days=0, delivery_days=0, timeline_days=0, history_days=0)


def test_raw_payloads_go_after_their_window_and_dedupe_still_answers(app: App) -> None:
    old = [app.send(f"old-{i}").accepted[0] for i in range(3)]
    failed = app.send("broken").accepted[0]
    app.process()
    with app.db.begin() as conn:  # as if every attempt had failed
        event_store.mark_failed(conn, failed, 5, "boom", app.clock.now())
    app.clock.advance(10 * DAY)
    recent = [app.send(f"recent-{i}").accepted[0] for i in range(2)]
    app.process()
    with app.db.read() as conn:
        canonical = event_store.get(conn, old[0])["canonical"]  # type: ignore[index]

    app.clock.advance(25 * DAY)  # old: 35 days, recent: 25 days
    report = prune(app, RAW_ONLY)
    assert report.counts()["events"] == 3
    raw = raw_of(app.db)
    assert [raw[i] for i in old] == [False, False, False]
    assert raw[failed] is True  # kept for a replay
    assert [raw[i] for i in recent] == [True, True]

    # The row stays: a redelivery is still a duplicate of the same event, and nothing else moved.
    again = app.send("old-0")
    assert again.accepted == [] and again.duplicates == [old[0]]
    with app.db.read() as conn:
        row = event_store.get(conn, old[0])
    assert row is not None and row["status"] == "processed" and row["canonical"] == canonical
    assert row["dedupe_key"] == "api:old-0"

    app.clock.advance(10 * DAY)
    assert prune(app, RAW_ONLY).counts()["events"] == 2
    assert not any(raw_of(app.db)[i] for i in recent)
    assert prune(app, RAW_ONLY).counts()["events"] == 0  # a later pass starts past them


def test_a_pending_event_is_never_cleared_and_holds_the_walk(app: App) -> None:
    done = app.send("done").accepted[0]
    app.process()
    pending = app.send("pending").accepted[0]
    after = app.send("after").accepted[0]
    app.clock.advance(40 * DAY)
    with app.db.begin() as conn:  # only "after" is processed; "pending" waits for a retry
        event_store.mark_processed(conn, [(after, None)], app.clock.now() - 35 * DAY)
    assert prune(app, RAW_ONLY).counts()["events"] == 1
    mine = (done, pending, after)
    assert [raw_of(app.db)[i] for i in mine] == [False, True, True]

    app.process()
    app.clock.advance(31 * DAY)
    assert prune(app, RAW_ONLY).counts()["events"] == 2  # the walk goes on from where it was
    assert [raw_of(app.db)[i] for i in mine] == [False, False, False]


def _job(conn: Any, key: str, status: str, finished: datetime, **extra: Any) -> int:
    ref = jobs.enqueue(conn, kind="send_email", key=key, run_at=finished, payload={}, **extra)
    conn.execute(
        update(jobs_table)
        .where(jobs_table.c.id == ref.id)
        .values(status=status, updated_at=finished)
    )
    return ref.id


def _enrollment(conn: Any, contact_id: int, status: str, now: datetime) -> int:
    values = {
        "sequence_id": "onboarding",
        "key": f"contact:{contact_id}:{status}",
        "contact_id": contact_id,
        "status": status,
        "anchor_at": now,
        "enrolled_at": now,
    }
    return int(
        conn.execute(insert(enrollments).values(**values).returning(enrollments.c.id)).scalar()
    )


JOBS_ONLY = Policy(raw_days=0, job_days=14, delivery_days=0, timeline_days=0, history_days=0)


def test_finished_jobs_go_unless_their_key_could_come_back(app: App) -> None:
    contact = new_contact(app.db, app.clock)
    now = app.clock.now()
    old, young = now - 20 * DAY, now - 2 * DAY
    with app.db.begin() as conn:
        live = _enrollment(conn, contact, "active", old)
        ended = _enrollment(conn, contact, "completed", old)
        ids = {
            "done": _job(conn, "rule:1:a:0", "done", old),
            "cancelled": _job(conn, "rule:1:a:1", "cancelled", old),
            "dead": _job(conn, "rule:1:a:2", "dead", old),
            "young": _job(conn, "rule:2:a:0", "done", young),
            "waiting": _job(conn, "rule:3:a:0", "scheduled", old),
            "live step": _job(conn, f"seq:{live}:s1", "done", old, enrollment_id=live),
            "live cancelled": _job(conn, f"seq:{live}:s2", "cancelled", old, enrollment_id=live),
            "ended step": _job(conn, f"seq:{ended}:s1", "done", old, enrollment_id=ended),
        }
    report = prune(app, JOBS_ONLY)
    assert report.counts()["jobs"] == 3
    with app.db.read() as conn:
        left = {r.id for r in conn.execute(select(jobs_table.c.id))}
    gone = {name for name, job_id in ids.items() if job_id not in left}
    assert gone == {"done", "cancelled", "ended step"}


def test_a_replayed_event_does_not_run_its_pruned_jobs_again(app: App) -> None:
    event_id = app.send("order-1", type="purchase.completed", amount=80).accepted[0]
    app.process()
    with app.db.read() as conn:
        keys = {r.key for r in conn.execute(select(jobs_table.c.key))}
    mine = {k for k in keys if k.startswith(f"rule:{event_id}:purchase:")}
    assert len(mine) == 2  # the e-mail and the follow-up task
    with app.db.begin() as conn:
        conn.execute(update(jobs_table).values(status="done", updated_at=app.clock.now()))
    app.clock.advance(30 * DAY)
    assert prune(app, JOBS_ONLY).counts()["jobs"] == len(keys)

    with app.db.begin() as conn:
        assert event_store.requeue(conn, event_id, app.clock.now())
    app.process()
    with app.db.read() as conn:
        assert conn.execute(select(jobs_table.c.key)).all() == []
        assert event_store.get(conn, event_id)["status"] == "processed"  # type: ignore[index]


def test_delivery_log_rows_go_after_their_window(app: App) -> None:
    def log(at: datetime) -> None:
        row = {
            "endpoint": "crm",
            "job_key": "rule:1:a:0",
            "webhook_id": "w",
            "event_type": "task.created",
            "attempt": 1,
            "status_code": 200,
            "error": None,
            "duration_ms": 5,
            "at": at,
        }
        with app.db.begin() as conn:
            endpoint_store.log_delivery(conn, row)

    now = app.clock.now()
    for days in (60, 45, 31, 29, 1):
        log(now - days * DAY)
    report = prune(
        app, Policy(raw_days=0, job_days=0, delivery_days=30, timeline_days=0, history_days=0)
    )
    assert report.counts()["deliveries"] == 3
    with app.db.read() as conn:
        left = endpoint_store.deliveries_for(conn, "crm")
    assert sorted((now - r["at"]).days for r in left) == [1, 29]


TIMELINE_ONLY = Policy(raw_days=0, job_days=0, delivery_days=0, timeline_days=90, history_days=0)


def test_old_timeline_rows_lose_their_detail_only(app: App) -> None:
    old_event = app.send("order-1", type="purchase.completed", amount=80).accepted[0]
    app.process()
    app.clock.advance(60 * DAY)
    new_event = app.send("p-2").accepted[0]
    app.process()
    with app.db.read() as conn:
        before = {r.id: dict(r._mapping) for r in conn.execute(select(timeline))}
    app.clock.advance(40 * DAY)

    report = prune(app, TIMELINE_ONLY)
    with app.db.read() as conn:
        after = {r.id: dict(r._mapping) for r in conn.execute(select(timeline))}
        seen, rules = rule_fires.event_history(conn, after[min(after)]["contact_id"], old_event)
    cutoff = app.clock.now() - 90 * DAY
    old_rows = [i for i, r in before.items() if r["at"] < cutoff]
    assert any(before[i]["event_id"] == old_event for i in old_rows)
    assert report.counts()["timeline"] == sum(1 for i in old_rows if before[i]["detail"] != {})
    kept = ("contact_id", "event_id", "at", "kind", "rule_id")
    for i in old_rows:
        assert after[i]["detail"] == ({"trimmed": True} if before[i]["detail"] else {})
        assert {k: after[i][k] for k in kept} == {k: before[i][k] for k in kept}
    young = [i for i, r in before.items() if r["at"] >= cutoff]
    assert young and all(after[i] == before[i] for i in young)
    assert any(before[i]["event_id"] == new_event for i in young)
    # A replay still sees that the purchase rule acted on the old event.
    assert seen and rules == {"purchase"}


HISTORY_ONLY = Policy(raw_days=0, job_days=0, delivery_days=0, timeline_days=0, history_days=90)


def _ledger(db: Database) -> dict[tuple[int, str], tuple[int, int]]:
    """Per contact and component: (sum of deltas, rows)."""
    with db.read() as conn:
        rows = conn.execute(select(score_ledger.c.contact_id, score_ledger.c.component,
                                   score_ledger.c.delta)).all()  # fmt: skip
    sums: dict[tuple[int, str], tuple[int, int]] = {}
    for r in rows:
        total, n = sums.get((r.contact_id, r.component), (0, 0))
        sums[(r.contact_id, r.component)] = (total + r.delta, n + 1)
    return sums


def _event_ids(db: Database) -> set[int]:
    with db.read() as conn:
        return {r.id for r in conn.execute(select(events.c.id))}


def _timeline_events(db: Database) -> set[int | None]:
    with db.read() as conn:
        return {r.event_id for r in conn.execute(select(timeline.c.event_id))}


def test_history_goes_after_its_window_and_scores_still_add_up(app: App) -> None:
    old = [
        app.send(
            f"order-{i}", email=f"c{i % 2}@example.com", type="purchase.completed", amount=80
        ).accepted[0]
        for i in range(4)
    ]
    failed = app.send("broken").accepted[0]
    app.process()
    with app.db.begin() as conn:
        event_store.mark_failed(conn, failed, 5, "boom", app.clock.now())
    app.clock.advance(60 * DAY)
    recent = app.send("order-9", type="purchase.completed", amount=80).accepted[0]
    app.process()
    before = _ledger(app.db)
    assert sum(n for _, n in before.values()) > len(before)  # something to sum
    with app.db.read() as conn:
        scores = {r.id: r.score for r in conn.execute(select(contacts.c.id, contacts.c.score))}

    # Old: the orders, the events their rules derived (score.crossed, ...) and the failed one.
    older = {i for i in _event_ids(app.db) if i < recent}
    assert set(old) | {failed} <= older

    app.clock.advance(40 * DAY)  # old: 100 days, recent: 40 days
    report = prune(app, HISTORY_ONLY)
    counts = report.counts()
    assert counts["events_deleted"] == len(older) - 1
    left = _event_ids(app.db)
    assert left & older == {failed} and recent in left  # failed: kept for a replay
    timeline_events = _timeline_events(app.db)
    assert not timeline_events & set(old) and recent in timeline_events
    assert counts["timeline_deleted"] > 0

    # Every contact's score still adds up, per component, from fewer rows.
    after = _ledger(app.db)
    assert {k: total for k, (total, _) in after.items()} == {
        k: total for k, (total, _) in before.items()
    }
    assert counts["score_ledger_folded"] > 0
    assert sum(n for _, n in after.values()) < sum(n for _, n in before.values())
    with app.db.read() as conn:
        folded = conn.execute(
            select(score_ledger).where(score_ledger.c.reason == store.FOLDED)
        ).all()
        assert {r.event_id for r in folded} == {None} and {r.rule_id for r in folded} == {None}
        assert len({(r.contact_id, r.component) for r in folded}) == len(folded)
        assert {r.id: r.score for r in conn.execute(select(contacts.c.id, contacts.c.score))} == (
            scores
        )
        # The recent event's rows are as they were: its replay must still see them.
        recent_rows = conn.execute(
            select(score_ledger).where(score_ledger.c.event_id == recent)
        ).all()
    assert recent_rows

    # Past the dedupe window a redelivery is a new event.
    again = app.send("order-0", email="c0@example.com", type="purchase.completed", amount=80)
    assert again.duplicates == [] and len(again.accepted) == 1

    # A later pass sums into the same row; nothing is summed twice.
    app.process()
    sums = {k: total for k, (total, _) in _ledger(app.db).items()}
    app.clock.advance(100 * DAY)
    prune(app, HISTORY_ONLY)
    later = _ledger(app.db)
    assert {k: total for k, (total, _) in later.items()} == sums
    with app.db.read() as conn:
        folded = conn.execute(
            select(score_ledger).where(score_ledger.c.reason == store.FOLDED)
        ).all()
    assert len({(r.contact_id, r.component) for r in folded}) == len(folded)
    with app.db.read() as conn:
        rest = conn.execute(
            select(score_ledger.c.event_id).where(score_ledger.c.reason != store.FOLDED)
        ).all()
    # Not summed: the kept event's rows, and the newest row (never deleted, see below).
    assert len([r for r in rest if r.event_id != failed]) == 1
    assert prune(app, HISTORY_ONLY).counts()["score_ledger_folded"] == 0


def test_an_event_a_live_enrolment_reads_stays_with_its_history(app: App) -> None:
    held = app.send("signup", type="purchase.completed", amount=80).accepted[0]
    other = app.send("p-1", type="purchase.completed", amount=80).accepted[0]
    app.process()
    with app.db.begin() as conn:
        contact_id = event_store.get(conn, held)["contact_id"]  # type: ignore[index]
        live = _enrollment(conn, contact_id, "active", app.clock.now())
        conn.execute(update(enrollments).where(enrollments.c.id == live).values(event_id=held))
    stored = _event_ids(app.db)  # the two, and what their rules derived
    app.clock.advance(100 * DAY)
    app.send("today")
    app.process()
    assert prune(app, HISTORY_ONLY).counts()["events_deleted"] == len(stored) - 1
    assert _event_ids(app.db) & stored == {held}
    assert held in _timeline_events(app.db) and other not in _timeline_events(app.db)
    with app.db.read() as conn:
        seen, rules = rule_fires.event_history(conn, contact_id, held)
        ledger_events = {r.event_id for r in conn.execute(select(score_ledger.c.event_id))}
    assert seen and rules == {"purchase"}  # a replay still skips what already ran
    assert held in ledger_events and other not in ledger_events

    sums = {k: total for k, (total, _) in _ledger(app.db).items()}
    dry = Pruner(app.db, HISTORY_ONLY, pause=lambda s: None).run(app.clock.now(), dry_run=True)
    assert dry.counts()["events_released"] == 0  # still read by the live enrolment

    # Once the enrolment ends, the next pass comes back for it, with its timeline and ledger.
    with app.db.begin() as conn:
        conn.execute(update(enrollments).values(status="completed"))
    dry = Pruner(app.db, HISTORY_ONLY, pause=lambda s: None).run(app.clock.now(), dry_run=True)
    assert dry.counts()["events_released"] == 1 and held in _event_ids(app.db)
    counts = prune(app, HISTORY_ONLY).counts()
    assert counts["events_released"] == 1 and counts["events_deleted"] == 0
    assert counts["timeline_deleted"] > 0 and counts["score_ledger_folded"] > 0
    assert held not in _event_ids(app.db) and held not in _timeline_events(app.db)
    with app.db.read() as conn:
        ledger_events = {r.event_id for r in conn.execute(select(score_ledger.c.event_id))}
    assert held not in ledger_events
    assert {k: total for k, (total, _) in _ledger(app.db).items()} == sums
    assert prune(app, HISTORY_ONLY).counts()["events_released"] == 0


def test_a_pending_event_holds_the_history_of_the_events_after_it(app: App) -> None:
    done = app.send("done", type="purchase.completed", amount=80).accepted[0]
    app.process()
    first = _event_ids(app.db)  # "done" and what its rules derived
    pending = app.send("pending").accepted[0]
    after = app.send("after", type="purchase.completed", amount=80).accepted[0]
    app.clock.advance(100 * DAY)
    with app.db.begin() as conn:  # "after" was processed long ago; "pending" still retries
        event_store.mark_processed(conn, [(after, None)], app.clock.now() - 95 * DAY)
    report = prune(app, HISTORY_ONLY)
    assert report.counts()["events_deleted"] == len(first)
    assert _event_ids(app.db) == {pending, after}
    assert done not in _timeline_events(app.db)

    app.process()  # processes "pending" (and "after" is already done)
    rest = _event_ids(app.db)
    app.clock.advance(100 * DAY)
    app.send("today")
    app.process()
    assert prune(app, HISTORY_ONLY).counts()["events_deleted"] == len(rest)
    assert not _event_ids(app.db) & rest
    assert not _timeline_events(app.db) & {done, pending, after}


def test_the_newest_row_stays_so_no_id_is_handed_out_twice(app: App) -> None:
    first = app.send("first", type="purchase.completed", amount=80).accepted[0]
    app.process()
    stored = _event_ids(app.db)
    app.clock.advance(100 * DAY)
    prune(app, HISTORY_ONLY)
    assert _event_ids(app.db) == {max(stored)}  # everything is old, but the newest row stays
    with app.db.read() as conn:
        assert conn.execute(select(timeline.c.id)).all()
    # SQLite hands out the largest id plus one: with the newest row kept, a new event's id is
    # new, so the job keys and messages of an event that is gone can never be taken for its own.
    second = app.send("second").accepted[0]
    assert second > max(stored) and first not in _event_ids(app.db)


def test_every_batch_is_bounded_and_followed_by_a_pause(app: App) -> None:
    sent = [app.send(f"e-{i}").accepted[0] for i in range(45)]
    app.process()
    app.clock.advance(31 * DAY)
    cleared: list[int] = []
    pauses: list[float] = []

    def pause(seconds: float) -> None:
        pauses.append(seconds)
        raw = raw_of(app.db)
        cleared.append(sum(1 for i in sent if not raw[i]))

    policy = Policy(
        raw_days=30, job_days=0, delivery_days=0, timeline_days=0, history_days=0, batch_size=10
    )
    report = Pruner(app.db, policy, pause=pause).run(app.clock.now())
    assert report.counts()["events"] == 45
    steps = [b - a for a, b in zip([0, *cleared], cleared, strict=False)]
    assert max(steps) == 10 and sum(steps) == 45
    assert len(pauses) == report.writes and min(pauses) > 0


def test_a_dry_run_counts_what_a_run_does_and_changes_nothing(app: App) -> None:
    for i in range(25):
        app.send(f"e-{i}", type="purchase.completed", amount=80)
    app.process()
    with app.db.begin() as conn:
        conn.execute(update(jobs_table).values(status="done", updated_at=app.clock.now()))
    app.clock.advance(200 * DAY)
    policy = Policy(batch_size=10)
    before = raw_of(app.db)
    dry = Pruner(app.db, policy, pause=lambda s: None).run(app.clock.now(), dry_run=True)
    assert raw_of(app.db) == before
    assert dry.writes == 0 and dry.counts()["events"] == 25
    real = prune(app, policy)
    assert real.counts() == dry.counts()
    history = {"events_deleted", "timeline_deleted", "score_ledger_folded", "events_released"}
    assert all(v > 0 for k, v in real.counts().items() if k not in {"deliveries", *history})
    assert {real.counts()[k] for k in history} == {0}  # 200 days: inside the history window


def test_the_pass_is_a_recurring_job(app: App) -> None:
    policy = Policy()
    interval = timedelta(hours=1)
    now = app.clock.now()
    assert ensure_scheduled(app.db, policy, interval, now)
    assert not ensure_scheduled(app.db, policy, interval, now)  # one per slot, whoever asks
    assert not ensure_scheduled(app.db, Policy(0, 0, 0, 0), interval, now)
    app.send("e-1")
    app.process()
    app.clock.advance(60 * DAY)
    worker = JobWorker(app.container, build_registry(app.container))
    asyncio.run(worker.drain())
    with app.db.read() as conn:
        rows = conn.execute(
            select(jobs_table.c.key, jobs_table.c.status).where(jobs_table.c.kind == JOB_KIND)
        ).all()
    statuses = dict(rows)
    assert statuses[run_key(START.replace(minute=0) + interval)] == "done"
    assert sorted(statuses.values()) == ["done", "scheduled"]
    assert raw_of(app.db)[1] is False


class BusyAfterFirstWrite:
    """The database as a pass sees it when every writer slot stays taken past the timeout."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self.is_sqlite = db.is_sqlite
        self.writes = 0

    def read(self) -> Any:
        return self.db.read()

    def begin(self) -> Any:
        self.writes += 1
        if self.writes > 1:
            raise StorageUnavailable("database unavailable: database is locked")
        return self.db.begin()


def test_a_busy_database_ends_the_pass_quietly_and_the_chain_goes_on(app: App) -> None:
    app.send("e-1")
    app.process()
    app.clock.advance(60 * DAY)
    ctx = JobContext(1, "k", JOB_KIND, {}, 1, None, None, app.clock.now())
    busy = BusyAfterFirstWrite(app.db)
    run_pass(busy, Policy(), timedelta(hours=1), ctx)  # type: ignore[arg-type]
    assert busy.writes == 2  # queued the next pass, then gave way at the first batch
    with app.db.read() as conn:
        keys = [r.key for r in conn.execute(select(jobs_table.c.key))]
    assert keys == [run_key(app.clock.now().replace(minute=0, second=0) + timedelta(hours=1))]
    assert raw_of(app.db)[1] is True  # the next pass does it


@pytest.fixture
def sqlite_app(sqlite_url: str) -> Iterator[App]:
    clock = VirtualClock(START)
    container = build_container(Settings(database_url=sqlite_url), clock=clock)
    ingestor = Ingestor(container.db, clock)
    yield App(container, ingestor, build_processor(container))
    ingestor.close()
    container.close()


def _file_bytes(url: str) -> int:
    path = url.removeprefix("sqlite:///")
    con = sqlite3.connect(path)
    con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    con.close()
    return os.path.getsize(path)


def test_sqlite_gives_the_freed_pages_back_to_the_file_system(sqlite_app: App) -> None:
    app = sqlite_app
    for i in range(400):
        app.send(f"big-{i}", note="y" * 3000)
    app.process()
    app.clock.advance(31 * DAY)
    url = app.db.url
    before = _file_bytes(url)
    report = Pruner(app.db, RAW_ONLY, pause=lambda s: None, vacuum_step_pages=50).run(
        app.clock.now()
    )
    assert report.counts()["events"] == 400
    assert report.before.incremental and report.vacuumed_pages > 100
    assert report.after.bytes < report.before.bytes - 100 * 4096
    assert report.after.free_bytes == 0
    app.db.dispose()
    assert _file_bytes(url) < before - 100 * 4096


def test_an_old_sqlite_file_reclaims_only_after_one_vacuum(sqlite_url: str) -> None:
    path = sqlite_url.removeprefix("sqlite:///")
    con = sqlite3.connect(path, isolation_level=None)
    con.execute("PRAGMA auto_vacuum=NONE")
    con.execute("VACUUM")  # as files made before nurture asked for incremental vacuum
    con.close()
    db = Database(sqlite_url)
    try:
        with db.read() as conn:
            assert not store.space(conn).incremental
        assert Pruner(db, RAW_ONLY, pause=lambda s: None).reclaim() == 0
        store.vacuum(db)
        with db.read() as conn:
            assert store.space(conn).incremental
    finally:
        db.dispose()
