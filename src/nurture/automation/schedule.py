"""Scheduled rules (``on: schedule`` with ``cron:``), run through the job scheduler.

Each scheduled rule has one pending ``rule_schedule`` job, keyed by the rule and its next cron
time, so any number of workers (and restarts) schedule it once. When it runs it queues one
``schedule`` event per contact with an e-mail, keyed by (rule, tick, contact) so a retried tick
queues nothing twice, and schedules the next tick. The rules step then evaluates only that rule
for each contact, with its condition, once-limits and actions, like any other event.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from functools import partial
from pathlib import Path

from croniter import croniter
from sqlalchemy import Connection

from nurture import jobs
from nurture.clock import Clock
from nurture.core.events import ContactRef, InboundEvent
from nurture.database.engine import Database
from nurture.intake.ingest import build_rows
from nurture.rules.book import SCHEDULE, Automation, Rule, load
from nurture.storage import contacts as contact_store
from nurture.storage import events as event_store

log = logging.getLogger("nurture.rules")

JOB_KIND = "rule_schedule"
PAGE = 1000


def next_tick(cron: str, after: datetime) -> datetime:
    """The first cron time strictly after ``after``, in UTC."""
    nxt: datetime = croniter(cron, after.astimezone(UTC)).get_next(datetime)
    return nxt.astimezone(UTC)


def tick_key(rule_id: str, at: datetime) -> str:
    return f"{JOB_KIND}:{rule_id}:{at:%Y%m%dT%H%M%SZ}"


def schedule_next(conn: Connection, rule: Rule, after: datetime) -> jobs.JobRef:
    assert rule.spec.cron is not None
    at = next_tick(rule.spec.cron, after)
    return jobs.enqueue(
        conn,
        kind=JOB_KIND,
        key=tick_key(rule.id, at),
        run_at=at,
        payload={"rule_id": rule.id, "cron": rule.spec.cron, "tick": at.isoformat()},
    )


def ensure_schedules(db: Database, automation: Automation, now: datetime) -> int:
    """Make sure every scheduled rule has its next tick queued; returns how many were new."""
    created = 0
    with db.begin() as conn:
        for rule in automation.scheduled:
            created += schedule_next(conn, rule, now).created
    return created


def queue_tick(db: Database, rule: Rule, tick: datetime, partitions: int, now: datetime) -> int:
    """One ``schedule`` event per contact with an e-mail; returns how many were queued."""
    queued = 0
    after: int | None = None
    while True:
        with db.begin() as conn:
            page = contact_store.search(conn, None, after_id=after, limit=PAGE)
            events = [
                InboundEvent(
                    source=SCHEDULE,
                    type=SCHEDULE,
                    dedupe_key=f"{rule.id}:{tick.isoformat()}:{row['id']}",
                    contact=ContactRef(email=row["email"]),
                    data={"rule_id": rule.id, "tick": tick.isoformat()},
                    occurred_at=tick,
                )
                for row in page
                if row["email"]
            ]
            if events:
                queued += len(
                    event_store.insert_new(conn, build_rows(events, None, None, now, partitions))
                )
        if len(page) < PAGE:
            return queued
        after = page[-1]["id"]


def run_tick(
    db: Database, automation_dir: Path | None, partitions: int, ctx: jobs.JobContext
) -> None:
    automation = load(automation_dir)
    rule = automation.rule(str(ctx.payload.get("rule_id")))
    if rule is None or not rule.spec.enabled or rule.spec.cron is None:
        # The rule was removed, disabled or unscheduled since: let its schedule end here.
        return
    tick = datetime.fromisoformat(str(ctx.payload["tick"]))
    queued = queue_tick(db, rule, tick, partitions, ctx.now)
    ctx.heartbeat()
    with db.begin() as conn:
        schedule_next(conn, rule, max(tick, ctx.now))
    log.info(
        "scheduled rule ran",
        extra={"action": "rules.schedule", "rule_id": rule.id, "events": queued},
    )


def register(
    registry: jobs.HandlerRegistry, db: Database, automation_dir: Path | None, partitions: int
) -> None:
    registry.register(JOB_KIND, partial(run_tick, db, automation_dir, partitions), max_attempts=5)


def schedule_loop(
    db: Database, clock: Clock, automation_dir: Path | None
) -> Callable[[asyncio.Event], Awaitable[None]]:
    """A worker loop: at start, queue the next tick of every scheduled rule, then end."""

    async def run(stop: asyncio.Event) -> None:
        automation = await asyncio.to_thread(load, automation_dir)
        now = clock.now()
        created = await asyncio.to_thread(ensure_schedules, db, automation, now)
        if created:
            log.info("scheduled rules queued", extra={"action": "rules.schedule", "new": created})

    return run
