"""The rules step inside the event processor, on SQLite and PostgreSQL: contact changes, the
score ledger, jobs with idempotent keys, derived events, replays and once-limits."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from nurture.automation.step import RulesStep, explain
from nurture.bootstrap import Container
from nurture.clock import VirtualClock
from nurture.config import Settings
from nurture.core.events import ContactRef, InboundEvent
from nurture.database.engine import Database
from nurture.intake.ingest import build_rows
from nurture.intake.process import EventProcessor
from nurture.integrations import tasks as task_service
from nurture.jobs import HandlerRegistry, JobWorker
from nurture.pack import DEFAULTS_DIR
from nurture.rules.book import Automation, load
from nurture.storage import contacts as contact_store
from nurture.storage import events as event_store
from nurture.storage import jobs as job_store
from nurture.storage import scores as score_store
from nurture.storage import tasks as task_store
from nurture.storage import timeline as timeline_store

EMAIL = "ann@example.com"


@pytest.fixture
def automation() -> Automation:
    return load(DEFAULTS_DIR)


@pytest.fixture
def processor(db: Database, clock: VirtualClock, automation: Automation) -> EventProcessor:
    return EventProcessor(db, clock, [RulesStep(automation)], partitions=4)


def insert(db: Database, clock: VirtualClock, type_: str, email: str = EMAIL, **data: Any) -> int:
    event = InboundEvent(
        source="track",
        type=type_,
        dedupe_key=f"{type_}:{email}:{clock.now().isoformat()}:{sorted(data.items())}",
        contact=ContactRef(email=email),
        data=data,
    )
    with db.begin() as conn:
        ids = event_store.insert_new(conn, build_rows([event], None, None, clock.now(), 4))
    return next(iter(ids.values()))


def contact(db: Database, email: str = EMAIL) -> Any:
    with db.read() as conn:
        return contact_store.load_by_email(conn, email)


def seed_rfm(db: Database, clock: VirtualClock, score: float, frequency: int = 3) -> None:
    """The RFM figures the purchases feature keeps on the contact."""
    insert(db, clock, "page.viewed", url="/")
    EventProcessor(db, clock, []).drain()
    with db.begin() as conn:
        state = contact_store.load_by_email(conn, EMAIL)
        assert state is not None
        state.rfm = {
            "recency_days": 10,
            "frequency": frequency,
            "monetary": 300.0,
            "score": score,
            "last_order_at": (clock.now() - timedelta(days=10)).isoformat(),
        }
        contact_store.save(conn, state, clock.now())


def timeline_kinds(db: Database, contact_id: int) -> list[tuple[str, str | None]]:
    with db.read() as conn:
        rows = timeline_store.for_contact(conn, contact_id, limit=1000)
    return [(r["kind"], r["rule_id"]) for r in reversed(rows)]


def jobs_of(db: Database) -> dict[str, dict[str, Any]]:
    with db.read() as conn:
        return {j["key"]: j for j in job_store.search(conn, limit=500)}


def test_click_scores_tags_and_explains(
    db: Database, clock: VirtualClock, processor: EventProcessor
) -> None:
    seed_rfm(db, clock, score=3.8)  # VIP
    event_id = insert(db, clock, "email.clicked", link="https://example.com")
    processor.drain()
    state = contact(db)
    assert state.segments["value"] == "VIP"
    assert "engaged" in state.tags
    # 50 + 38 (rfm) + 2 (one engagement event) + 15 (3 orders) - 0 (10 days) + 15 (rule) -> 100
    assert state.score == 100
    assert state.engagement["sum"] == 15
    with db.read() as conn:
        ledger = score_store.for_contact(conn, state.id)
        explained = explain(conn, state.id, load(DEFAULTS_DIR), clock.now())
    assert [(r["rule_id"], r["delta"], r["event_id"]) for r in ledger if r["rule_id"]] == [
        ("email-clicked", 15, event_id)
    ]
    assert explained is not None
    assert explained["components"]["engagement"] == 15
    assert explained["components"]["rfm"] == 38
    assert explained["rules"][0]["rule_id"] == "email-clicked"
    assert explained["rules"][0]["event_id"] == event_id
    kinds = timeline_kinds(db, state.id)
    assert ("rule.fired", "email-clicked") in kinds
    assert ("score.crossed", None) in kinds


def test_no_value_segment_no_points(
    db: Database, clock: VirtualClock, processor: EventProcessor
) -> None:
    insert(db, clock, "email.opened")
    processor.drain()
    state = contact(db)
    assert "value" not in state.segments
    assert state.engagement.get("sum", 0) == 0
    assert state.score == 52  # the engagement event counts in the profile, the rule does not fire


def test_purchase_over_50_scores_and_enqueues_jobs_once(
    db: Database, clock: VirtualClock, processor: EventProcessor
) -> None:
    event_id = insert(db, clock, "purchase.completed", amount=99.5)
    small = insert(db, clock, "purchase.completed", email="bob@example.com", amount=30)
    processor.drain()
    ann = contact(db)
    assert ann.engagement["sum"] == 50
    jobs = jobs_of(db)
    email_key = f"rule:{event_id}:purchase:1"
    task_key = f"rule:{event_id}:purchase:2"
    assert jobs[email_key]["kind"] == "send_email"
    assert jobs[email_key]["run_at"] == clock.now() + timedelta(minutes=5)
    assert jobs[email_key]["payload"]["template"] == "thank_you"
    assert jobs[email_key]["payload"]["rule_id"] == "purchase"
    assert jobs[task_key]["kind"] == "task"
    assert jobs[task_key]["run_at"] == clock.now() + timedelta(hours=24)
    assert not any(k.startswith(f"rule:{small}:") for k in jobs)
    assert contact(db, "bob@example.com").engagement.get("sum", 0) == 0

    # A replay of the purchase neither scores again nor creates a second job.
    with db.begin() as conn:
        assert event_store.requeue(conn, event_id, clock.now())
    processor.drain()
    assert contact(db).engagement["sum"] == 50
    assert len([k for k in jobs_of(db) if k.startswith(f"rule:{event_id}:")]) == 2
    with db.read() as conn:
        rules_rows = [r for r in score_store.for_contact(conn, ann.id) if r["rule_id"]]
    assert len(rules_rows) == 1


def test_crossing_80_derives_event_that_fires_the_vip_rule_once(
    db: Database, clock: VirtualClock, processor: EventProcessor
) -> None:
    seed_rfm(db, clock, score=1.0)  # At Risk: opens and clicks give nothing
    first = insert(db, clock, "purchase.completed", amount=60)  # 50 + 10 + 2 + 15 + 50 -> 100
    processor.drain()
    state = contact(db)
    assert state.score == 100
    with db.read() as conn:
        derived = event_store.search(conn, type_="score.crossed")
    assert len(derived) == 1
    assert derived[0]["parent_id"] == first
    assert derived[0]["status"] == "processed"
    jobs = jobs_of(db)
    vip = f"rule:{derived[0]['id']}:high-score:0"
    assert jobs[vip]["kind"] == "send_email"
    assert jobs[vip]["payload"]["template"] == "vip_offer"
    call = jobs[f"rule:{derived[0]['id']}:high-score:1"]
    assert call["payload"]["kind"] == "call"
    assert call["run_at"] == clock.now() + timedelta(hours=2)

    # Staying above the line fires nothing more.
    insert(db, clock, "purchase.completed", amount=70)
    processor.drain()
    with db.read() as conn:
        assert len(event_store.search(conn, type_="score.crossed")) == 1


def test_unsubscribe_suppresses(
    db: Database, clock: VirtualClock, processor: EventProcessor
) -> None:
    insert(db, clock, "email.unsubscribed")
    processor.drain()
    state = contact(db)
    assert state.status == "unsubscribed"
    assert "unsubscribed" in state.tags
    assert state.engagement["sum"] == -100
    assert state.score == 0
    kinds = timeline_kinds(db, state.id)
    assert ("rule.fired", "unsubscribe") in kinds


def test_assessment_form_sets_answers_and_segment(
    db: Database, clock: VirtualClock, processor: EventProcessor
) -> None:
    insert(
        db, clock, "form.submitted", form="christmas-assessment", red_systems=1, orange_systems=3
    )
    processor.drain()
    state = contact(db)
    assert state.attributes["red_systems"] == 1
    assert state.segments["assessment"] == "URGENT"
    with db.read() as conn:
        changed = event_store.search(conn, type_="segment.changed")
        created = event_store.search(conn, type_="contact.created")
    assert len(changed) == 1
    assert len(created) == 1
    with db.read() as conn:
        detail = event_store.get(conn, changed[0]["id"])
    assert detail is not None
    assert detail["canonical"]["data"] == {
        "segmentation": "assessment",
        "from": None,
        "to": "URGENT",
    }


def test_condition_error_goes_on_the_timeline_with_the_rule_id(
    db: Database, clock: VirtualClock, processor: EventProcessor
) -> None:
    insert(db, clock, "purchase.completed", amount="lots")
    processor.drain()
    state = contact(db)
    with db.read() as conn:
        rows = timeline_store.for_contact(conn, state.id)
    errors = [r for r in rows if r["kind"] == "rule.error"]
    assert [e["rule_id"] for e in errors] == ["purchase"]
    assert errors[0]["detail"]["where"] == "if"
    assert state.engagement.get("sum", 0) == 0


def test_once_limit_is_kept_per_contact(db: Database, clock: VirtualClock, tmp_path: Path) -> None:
    (tmp_path / "rules.yaml").write_text(
        "rules:\n"
        "  - id: welcome\n"
        "    on: page.viewed\n"
        "    once: contact\n"
        "    do:\n"
        "      - score: 3\n"
        "  - id: daily\n"
        "    on: page.viewed\n"
        "    once: 24h\n"
        "    do:\n"
        "      - tag: seen-today\n"
        "      - score: 1\n"
    )
    processor = EventProcessor(db, clock, [RulesStep(load(tmp_path))])
    insert(db, clock, "page.viewed", url="/a")
    processor.drain()
    clock.advance(timedelta(hours=1))
    insert(db, clock, "page.viewed", url="/b")
    processor.drain()
    assert contact(db).engagement["sum"] == 4
    clock.advance(timedelta(hours=24))
    insert(db, clock, "page.viewed", url="/c")
    processor.drain()
    assert contact(db).engagement["sum"] == 5


def test_task_job_handler_stores_the_task_once(
    db: Database, clock: VirtualClock, processor: EventProcessor, database_url: str
) -> None:
    event_id = insert(db, clock, "purchase.completed", amount=80)
    processor.drain()
    container = Container(settings=Settings(database_url=database_url), db=db, clock=clock)
    registry = HandlerRegistry()
    task_service.register(registry, db)
    worker = JobWorker(container, registry)
    clock.advance(timedelta(hours=25))
    # The follow-up task, and the VIP call the crossing of 80 asked for; the e-mails wait
    # (no handler registered here), visibly scheduled.
    assert asyncio.run(worker.drain()) == 2
    assert asyncio.run(worker.drain()) == 0
    with db.read() as conn:
        tasks = task_store.search(conn)
        email_job = job_store.get_by_key(conn, f"rule:{event_id}:purchase:1")
    assert sorted((t["title"], t["kind"], t["rule_id"]) for t in tasks) == [
        ("Call this VIP lead", "call", "high-score"),
        ("Follow-up call", "task", "purchase"),
    ]
    follow_up = next(t for t in tasks if t["rule_id"] == "purchase")
    assert follow_up["key"] == f"rule:{event_id}:purchase:2"
    assert follow_up["event_id"] == event_id
    assert email_job is not None and email_job["status"] == "scheduled"


def test_events_without_contact_are_left_alone(
    db: Database, clock: VirtualClock, processor: EventProcessor
) -> None:
    event = InboundEvent(source="track", type="email.opened", dedupe_key="x", contact=None, data={})
    with db.begin() as conn:
        event_store.insert_new(conn, build_rows([event], None, None, clock.now(), 4))
    assert processor.drain() == 1


def test_ledger_sum_matches_the_raw_score(
    db: Database, clock: VirtualClock, processor: EventProcessor
) -> None:
    for type_, data in [
        ("email.opened", {}),
        ("page.viewed", {"url": "/"}),
        ("email.bounced", {"kind": "soft"}),
        ("purchase.completed", {"amount": 120}),
        ("email.clicked", {}),
    ]:
        insert(db, clock, type_, **data)
        clock.advance(timedelta(minutes=1))
    processor.drain()
    state = contact(db)
    with db.read() as conn:
        ledger = score_store.for_contact(conn, state.id)
        explained = explain(conn, state.id, load(DEFAULTS_DIR), clock.now())
    assert explained is not None
    assert 50 + sum(r["delta"] for r in ledger) == explained["components"]["raw"]
    assert state.score == explained["total"] == min(max(explained["components"]["raw"], 0), 100)


def _job_context(container: Container, payload: dict[str, Any], key: str) -> Any:
    from nurture.jobs import JobContext

    return JobContext(
        job_id=1,
        key=key,
        kind="task",
        payload=payload,
        attempt=1,
        contact_id=payload.get("contact_id"),
        enrollment_id=None,
        now=container.clock.now(),
    )


def test_task_handler_is_idempotent_and_refuses_bad_payloads(
    db: Database, clock: VirtualClock, database_url: str
) -> None:
    from nurture.errors import ProviderError

    insert(db, clock, "page.viewed", url="/")
    EventProcessor(db, clock, []).drain()
    ann = contact(db)
    container = Container(settings=Settings(database_url=database_url), db=db, clock=clock)
    payload = {"title": "Call", "kind": "call", "contact_id": ann.id, "rule_id": "r"}
    task_service.store_task(db, _job_context(container, payload, "k1"))
    task_service.store_task(
        container.db, _job_context(container, payload, "k1")
    )  # lease lost, ran again
    with db.read() as conn:
        assert [t["key"] for t in task_store.search(conn)] == ["k1"]
    with pytest.raises(ProviderError) as err:
        task_service.store_task(db, _job_context(container, {"kind": "call"}, "k2"))
    assert err.value.permanent
    with pytest.raises(ProviderError):
        task_service.store_task(
            container.db, _job_context(container, {"title": "x", "kind": "meet"}, "k3")
        )
    with db.begin() as conn:
        contact_store.erase(conn, ann.id)
    task_service.store_task(
        container.db, _job_context(container, payload, "k4")
    )  # erased: nothing stored
    with db.read() as conn:
        assert task_store.search(conn) == []


def test_scheduled_rule_ticks_through_the_job_scheduler(
    db: Database, clock: VirtualClock, database_url: str, tmp_path: Path
) -> None:
    from nurture.automation import schedule as rule_schedule

    (tmp_path / "rules.yaml").write_text(
        "rules:\n"
        "  - id: daily-vip\n"
        "    on: schedule\n"
        "    cron: '0 10 * * *'\n"
        "    if: \"'vip' in contact.tags\"\n"
        "    do:\n"
        "      - score: 1\n"
        "        reason: Daily VIP point\n"
    )
    automation = load(tmp_path)
    for email in ("vip@example.com", "other@example.com"):
        insert(db, clock, "page.viewed", email=email, url="/")
    EventProcessor(db, clock, []).drain()
    with db.begin() as conn:
        vip = contact_store.load_by_email(conn, "vip@example.com")
        assert vip is not None
        vip.add_tag("vip")
        contact_store.save(conn, vip, clock.now())

    assert rule_schedule.ensure_schedules(db, automation, clock.now()) == 1
    assert rule_schedule.ensure_schedules(db, automation, clock.now()) == 0  # idempotent
    first = clock.now().replace(hour=10)  # START is 09:00 UTC
    assert set(jobs_of(db)) == {f"rule_schedule:daily-vip:{first:%Y%m%dT%H%M%SZ}"}

    settings = Settings(database_url=database_url, automation_dir=tmp_path)
    container = Container(settings=settings, db=db, clock=clock)
    registry = HandlerRegistry()
    rule_schedule.register(registry, db, tmp_path, settings.partitions)
    worker = JobWorker(container, registry)
    processor = EventProcessor(db, clock, [RulesStep(automation)])
    clock.advance(timedelta(hours=1))
    assert asyncio.run(worker.drain()) == 1
    assert processor.drain() == 2  # one schedule event per contact
    assert contact(db, "vip@example.com").engagement["sum"] == 1
    assert contact(db, "other@example.com").engagement.get("sum", 0) == 0
    following = first + timedelta(days=1)
    assert f"rule_schedule:daily-vip:{following:%Y%m%dT%H%M%SZ}" in jobs_of(db)

    # A tick that runs again (lease lost) queues nothing twice.
    assert rule_schedule.queue_tick(db, automation.scheduled[0], first, 4, clock.now()) == 0
    assert processor.drain() == 0


def test_engagement_decays_with_the_configured_half_life(
    db: Database, clock: VirtualClock, tmp_path: Path
) -> None:
    (tmp_path / "rules.yaml").write_text(
        "rules:\n  - id: visit\n    on: custom.visit\n    do:\n      - score: 20\n"
        "scoring:\n  half_life: 1d\n  engagement_events: []\n"
    )
    automation = load(tmp_path)
    processor = EventProcessor(db, clock, [RulesStep(automation)])
    insert(db, clock, "custom.visit")
    processor.drain()
    assert contact(db).score == 70
    clock.advance(timedelta(days=1))
    insert(db, clock, "custom.visit", n=2)
    processor.drain()
    state = contact(db)
    assert state.engagement["sum"] == 40  # the raw sum is kept undecayed
    assert state.engagement["decayed"] == pytest.approx(30.0)  # 20 halved, plus 20
    assert state.score == 80
    clock.advance(timedelta(days=2))
    with db.read() as conn:
        explained = explain(conn, state.id, automation, clock.now())
    assert explained is not None
    assert explained["inputs"]["engagement"] == pytest.approx(7.5)
    assert explained["total"] == 57
