"""Delayed immediate actions (``after:`` on score, tag, set ...) and replays that never act twice,
on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from nurture.automation import step as rule_service
from nurture.automation.step import RulesStep, explain
from nurture.bootstrap import Container
from nurture.clock import VirtualClock
from nurture.config import Settings
from nurture.database.engine import Database
from nurture.intake.process import EventProcessor
from nurture.jobs import HandlerRegistry, JobContext, JobWorker
from nurture.pack import DEFAULTS_DIR
from nurture.rules.book import Automation, load
from nurture.storage import events as event_store
from nurture.storage import jobs as job_store
from nurture.storage import scores as score_store
from nurture.storage import timeline as timeline_store
from tests.integration.automation.test_step import contact, insert, jobs_of, seed_rfm

DELAYED_RULES = """
rules:
  - id: later
    on: custom.signup
    do:
      - score: 10
        reason: Signed up a day ago
        after: 1d
      - tag: day-two
        after: 1d
      - set: stage
        value: warm
        after: 1d
      - tag: now
segments:
  - id: stage
    values:
      - value: warm
        if: has(contact.attributes.stage) && contact.attributes.stage == "warm"
      - value: cold
scoring:
  thresholds: [55]
  engagement_events: []
"""


@pytest.fixture
def worker(db: Database, clock: VirtualClock, database_url: str) -> JobWorker:
    container = Container(settings=Settings(database_url=database_url), db=db, clock=clock)
    registry = HandlerRegistry()
    rule_service.register(registry, db, container.settings.automation_dir)
    return JobWorker(container, registry)


def timeline(db: Database, contact_id: int) -> list[dict[str, Any]]:
    with db.read() as conn:
        return list(reversed(timeline_store.for_contact(conn, contact_id, limit=1000)))


def ledger(db: Database, contact_id: int) -> list[tuple[Any, ...]]:
    with db.read() as conn:
        rows = score_store.for_contact(conn, contact_id)
    return [(r["event_id"], r["rule_id"], r["action_index"], r["delta"]) for r in rows]


def replay(db: Database, clock: VirtualClock, event_id: int) -> None:
    with db.begin() as conn:
        assert event_store.requeue(conn, event_id, clock.now())


def status(db: Database, event_id: int) -> str:
    with db.read() as conn:
        row = event_store.get(conn, event_id)
    assert row is not None
    return str(row["status"])


# -- delayed immediate actions ------------------------------------------------------------------


def test_delayed_actions_become_jobs_and_apply_like_immediate_ones(
    db: Database, clock: VirtualClock, worker: JobWorker, tmp_path: Path
) -> None:
    (tmp_path / "rules.yaml").write_text(DELAYED_RULES)
    automation = load(tmp_path)
    processor = EventProcessor(db, clock, [RulesStep(automation)])
    origin = insert(db, clock, "custom.signup")
    processor.drain()

    state = contact(db)
    assert state.tags == ["now"]  # only the undelayed action so far
    assert state.score == 50
    assert state.segments == {"stage": "cold"}
    jobs = jobs_of(db)
    keys = {f"rule:{origin}:later:{i}" for i in range(3)}
    assert keys <= set(jobs)
    for key in keys:
        assert jobs[key]["kind"] == "rule_action"
        assert jobs[key]["run_at"] == clock.now() + timedelta(days=1)
    fired = [t for t in timeline(db, state.id) if t["kind"] == "rule.fired"]
    actions = fired[0]["detail"]["actions"]
    assert [(a["action"], a["immediate"], "job_key" in a) for a in actions] == [
        ("score", False, True),
        ("tag", False, True),
        ("set", False, True),
        ("tag", True, False),
    ]

    clock.advance(timedelta(days=1))
    assert asyncio.run(worker.drain()) == 3
    # A job that runs again (its lease lost after the commit) queues nothing twice.
    with db.read() as conn:
        job = job_store.get_by_key(conn, f"rule:{origin}:later:0")
    assert job is not None
    rule_service.queue_delayed(
        worker.db,
        JobContext(
            job_id=job["id"],
            key=job["key"],
            kind=job["kind"],
            payload=job["payload"],
            attempt=2,
            contact_id=state.id,
            enrollment_id=None,
            now=clock.now(),
        ),
    )
    assert processor.drain() == 3 + 2  # three rule.delayed events, then their derived events

    state = contact(db)
    assert state.tags == ["now", "day-two"]
    assert state.attributes["stage"] == "warm"
    assert state.segments == {"stage": "warm"}
    assert state.score == 60
    assert ledger(db, state.id) == [(origin, "later", 0, 10)]
    with db.read() as conn:
        explained = explain(conn, state.id, automation, clock.now())
        delayed = event_store.search(conn, type_="rule.delayed")
        crossed = event_store.search(conn, type_="score.crossed")
        changed = event_store.search(conn, type_="segment.changed")
    assert explained is not None
    assert [(r["rule_id"], r["event_id"], r["delta"]) for r in explained["rules"]] == [
        ("later", origin, 10)
    ]
    assert len(delayed) == 3
    assert {d["parent_id"] for d in delayed} == {origin}
    with db.read() as conn:
        by_index = {
            e["canonical"]["data"]["action_index"]: e["id"]
            for e in (event_store.get(conn, d["id"]) for d in delayed)
            if e is not None
        }
    # The score crossed 55 when the delayed score was applied; the segment moved with the set.
    assert [c["parent_id"] for c in crossed] == [by_index[0]]
    assert sorted(c["parent_id"] for c in changed) == [origin, by_index[2]]  # cold, then warm
    applied = [t for t in timeline(db, state.id) if t["kind"] == "rule.applied"]
    assert sorted(a["detail"]["action_index"] for a in applied) == [0, 1, 2]
    assert {a["detail"]["event_id"] for a in applied} == {origin}
    assert {a["rule_id"] for a in applied} == {"later"}
    notes = {t["kind"] for t in timeline(db, state.id)}
    assert {"score.crossed", "segment.changed", "score.changed"} <= notes

    # Replaying the delayed events or the original event changes nothing.
    for event in delayed:
        replay(db, clock, event["id"])
    replay(db, clock, origin)
    processor.drain()
    assert {status(db, e["id"]) for e in delayed} | {status(db, origin)} == {"processed"}
    again = contact(db)
    assert (again.score, again.tags, again.attributes, again.segments) == (
        state.score,
        state.tags,
        state.attributes,
        state.segments,
    )
    assert ledger(db, state.id) == [(origin, "later", 0, 10)]
    assert len([k for k in jobs_of(db) if k.startswith(f"rule:{origin}:")]) == 3
    with db.read() as conn:
        assert len(event_store.search(conn, type_="rule.delayed")) == 3


def test_a_delayed_action_for_an_erased_contact_does_nothing(
    db: Database, clock: VirtualClock, worker: JobWorker, tmp_path: Path
) -> None:
    from nurture.storage import contacts as contact_store

    (tmp_path / "rules.yaml").write_text(DELAYED_RULES)
    processor = EventProcessor(db, clock, [RulesStep(load(tmp_path))])
    insert(db, clock, "custom.signup")
    processor.drain()
    state = contact(db)
    with db.read() as conn:
        job = job_store.get_by_key(conn, next(k for k in jobs_of(db) if k.endswith(":0")))
    assert job is not None
    with db.begin() as conn:
        contact_store.erase(conn, state.id)
    rule_service.queue_delayed(
        worker.db,
        JobContext(
            job_id=job["id"],
            key=job["key"],
            kind=job["kind"],
            payload=job["payload"],
            attempt=1,
            contact_id=state.id,
            enrollment_id=None,
            now=clock.now(),
        ),
    )
    with db.read() as conn:
        assert event_store.search(conn, type_="rule.delayed") == []


# -- replays ------------------------------------------------------------------------------------


@pytest.fixture
def automation() -> Automation:
    return load(DEFAULTS_DIR)


def test_replaying_a_click_does_not_count_score_tag_or_ledger_again(
    db: Database, clock: VirtualClock, automation: Automation
) -> None:
    processor = EventProcessor(db, clock, [RulesStep(automation)])
    seed_rfm(db, clock, score=2.5)  # Standard: clicks and opens score
    click = insert(db, clock, "email.clicked", link="https://example.com")
    opened = insert(db, clock, "email.opened")
    processor.drain()
    before = contact(db)
    assert before.engagement["sum"] == 20
    assert before.engagement["events"] == 2
    assert "engaged" in before.tags
    rows = ledger(db, before.id)
    timeline_before = len(timeline(db, before.id))

    # The operator removes the tag; a replay must not put it back, nor score, count or ledger.
    with db.begin() as conn:
        from nurture.storage import contacts as contact_store

        stored = contact_store.load(conn, before.id)
        assert stored is not None
        stored.remove_tag("engaged")
        contact_store.save(conn, stored, clock.now())
    for event_id in (click, opened, click):
        replay(db, clock, event_id)
        processor.drain()
    after = contact(db)
    assert after.engagement["sum"] == 20
    assert after.engagement["events"] == 2
    assert after.score == before.score
    assert "engaged" not in after.tags
    assert ledger(db, after.id) == rows
    notes = timeline(db, after.id)[timeline_before:]
    skipped = [(n["kind"], n["rule_id"]) for n in notes if n["rule_id"]]
    assert skipped == [
        ("rule.skipped", "email-clicked"),
        ("rule.skipped", "email-opened"),
        ("rule.skipped", "email-clicked"),
    ]
    assert not any(n["kind"] in ("score.changed", "score.crossed") for n in notes)


def test_replay_applies_only_rules_that_had_not_acted_on_the_event(
    db: Database, clock: VirtualClock, automation: Automation
) -> None:
    processor = EventProcessor(db, clock, [RulesStep(automation)])
    click = insert(db, clock, "email.clicked", link="https://example.com")
    processor.drain()
    assert contact(db).engagement.get("sum", 0) == 0  # no value segment yet: no points
    seed_rfm(db, clock, score=2.5)
    replay(db, clock, click)
    processor.drain()  # the rule fires now, once
    replay(db, clock, click)
    processor.drain()  # and not again
    state = contact(db)
    assert state.engagement["sum"] == 15
    assert state.engagement["events"] == 1  # the click, counted once
    assert [r[1:] for r in ledger(db, state.id) if r[1]] == [("email-clicked", 0, 15)]


def test_replaying_a_purchase_enqueues_no_job_again_even_after_the_job_is_gone(
    db: Database, clock: VirtualClock, automation: Automation
) -> None:
    processor = EventProcessor(db, clock, [RulesStep(automation)])
    purchase = insert(db, clock, "purchase.completed", amount=90)
    processor.drain()
    keys = {k for k in jobs_of(db) if k.startswith(f"rule:{purchase}:")}
    assert len(keys) == 2
    with db.begin() as conn:  # as if the finished jobs had been purged
        from sqlalchemy import delete

        from nurture.schema.tables import jobs

        conn.execute(delete(jobs).where(jobs.c.key.in_(sorted(keys))))
    replay(db, clock, purchase)
    processor.drain()
    assert status(db, purchase) == "processed"
    assert not any(k.startswith(f"rule:{purchase}:") for k in jobs_of(db))
    assert contact(db).engagement["sum"] == 50


def test_an_event_processed_late_is_still_counted_once(
    db: Database, clock: VirtualClock, automation: Automation
) -> None:
    """An event retried after later ones (id below the contact's newest) is not a replay."""
    processor = EventProcessor(db, clock, [RulesStep(automation)])
    seed_rfm(db, clock, score=2.5)
    late = insert(db, clock, "email.opened")
    with db.begin() as conn:  # its first attempt failed; the retry is due in an hour
        event_store.mark_retry(conn, late, 1, clock.now() + timedelta(hours=1), "boom")
    insert(db, clock, "email.clicked", link="https://example.com")
    processor.drain()
    assert contact(db).engagement["sum"] == 15
    clock.advance(timedelta(hours=1))
    processor.drain()
    state = contact(db)
    assert state.engagement["sum"] == 20
    assert state.engagement["events"] == 2
    replay(db, clock, late)
    processor.drain()
    assert status(db, late) == "processed"
    assert contact(db).engagement["sum"] == 20


def test_replay_of_a_once_rule_keeps_its_once_time(
    db: Database, clock: VirtualClock, tmp_path: Path
) -> None:
    from nurture.storage import rule_fires

    (tmp_path / "rules.yaml").write_text(
        "rules:\n  - id: daily\n    on: page.viewed\n    once: 1h\n    do:\n      - score: 1\n"
    )
    processor = EventProcessor(db, clock, [RulesStep(load(tmp_path))])
    first = insert(db, clock, "page.viewed", url="/")
    processor.drain()
    fired_at = clock.now()
    clock.advance(timedelta(hours=2))
    replay(db, clock, first)
    processor.drain()
    state = contact(db)
    assert state.engagement["sum"] == 1
    with db.read() as conn:
        assert rule_fires.last_fired(conn, state.id, ["daily"]) == {"daily": fired_at}
    insert(db, clock, "page.viewed", url="/b")  # a new view after the window fires again
    processor.drain()
    assert contact(db).engagement["sum"] == 2


# -- derived events: crossings and the depth limit ----------------------------------------------


def crossings_of(db: Database) -> list[tuple[int, str, int]]:
    with db.read() as conn:
        rows = event_store.search(conn, type_="score.crossed", limit=100)
        found = [event_store.get(conn, r["id"]) for r in reversed(rows)]
    return [
        (e["canonical"]["data"]["threshold"], e["canonical"]["data"]["direction"], e["depth"])
        for e in found
        if e is not None
    ]


def test_each_threshold_crossing_fires_once_each_way(
    db: Database, clock: VirtualClock, tmp_path: Path
) -> None:
    (tmp_path / "rules.yaml").write_text(
        "rules:\n"
        + "".join(
            f"  - id: by{n}\n    on: custom.move\n    if: event.data.by == {n}\n"
            f"    do:\n      - score: {n}\n"
            for n in (40, -40, 5)
        )
        + "scoring:\n  thresholds: [60, 80]\n  engagement_events: []\n"
    )
    processor = EventProcessor(db, clock, [RulesStep(load(tmp_path))])
    for by in (40, 5, -40, 5):  # 50 -> 90 -> 95 -> 55 -> 60
        insert(db, clock, "custom.move", by=by)
        processor.drain()
        clock.advance(timedelta(minutes=1))
    assert crossings_of(db) == [
        (60, "up", 1),
        (80, "up", 1),
        (60, "down", 1),
        (80, "down", 1),
        (60, "up", 1),
    ]
    assert contact(db).score == 60


def test_a_loop_of_derived_events_stops_at_the_depth_limit(
    db: Database, clock: VirtualClock, tmp_path: Path
) -> None:
    """Rules that answer each crossing with a crossing the other way would run forever; the
    derived events stop at depth 5 and the timeline says what was dropped."""
    (tmp_path / "rules.yaml").write_text(
        "rules:\n"
        "  - id: start\n    on: custom.start\n    do:\n      - score: 40\n"
        "  - id: fall\n    on: score.crossed\n    if: event.data.direction == 'up'\n"
        "    do:\n      - score: -40\n"
        "  - id: rise\n    on: score.crossed\n    if: event.data.direction == 'down'\n"
        "    do:\n      - score: 40\n"
        "scoring:\n  thresholds: [80]\n  engagement_events: []\n"
    )
    processor = EventProcessor(db, clock, [RulesStep(load(tmp_path))])
    insert(db, clock, "custom.start")
    processor.drain()
    assert crossings_of(db) == [
        (80, "up", 1),
        (80, "down", 2),
        (80, "up", 3),
        (80, "down", 4),
        (80, "up", 5),
    ]
    state = contact(db)
    assert state.score == 50  # the depth-5 crossing's rule still ran; its crossing was dropped
    dropped = [t for t in timeline(db, state.id) if t["kind"] == "derived.dropped"]
    assert [d["detail"]["types"] for d in dropped] == [["score.crossed"]]


def test_a_failing_event_leaves_no_ledger_rows_or_jobs_from_its_batch(
    db: Database, clock: VirtualClock, automation: Automation
) -> None:
    """Ledger rows and jobs are written once per batch: an event whose later step fails is
    rolled back alone, and its rows are not written with the others'."""

    class Boom:
        name = "boom"

        def apply(self, ctx: Any) -> None:
            if ctx.event.data.get("boom"):
                raise RuntimeError("boom")

    processor = EventProcessor(db, clock, [RulesStep(automation), Boom()])
    good = insert(db, clock, "purchase.completed", amount=90)
    bad = insert(db, clock, "purchase.completed", email="bob@example.com", amount=90, boom=True)
    processor.run_once()
    assert status(db, good) == "processed"
    assert status(db, bad) == "pending"  # to be retried
    keys = set(jobs_of(db))
    assert {f"rule:{good}:purchase:1", f"rule:{good}:purchase:2"} <= keys
    assert not any(k.startswith(f"rule:{bad}:") for k in keys)
    with db.read() as conn:
        from nurture.storage import contacts as contact_store

        bob = contact_store.load_by_email(conn, "bob@example.com")
        ann = contact_store.load_by_email(conn, "ann@example.com")
        assert ann is not None
        assert [r["rule_id"] for r in score_store.for_contact(conn, ann.id) if r["rule_id"]] == [
            "purchase"
        ]
        assert bob is None or score_store.for_contact(conn, bob.id) == []
