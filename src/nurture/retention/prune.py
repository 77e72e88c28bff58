"""The pruning pass: what each table gives up after its window, in small batches.

* ``events``: a processed event older than ``raw_days`` loses its raw payload. The row stays:
  its ``dedupe_key`` still answers a redelivery "duplicate", and its canonical form still serves
  replays, templates that read the enrolling event, and the API. Failed events keep their raw
  (a replay may need it). Walked by id from a mark, so each pass reads only rows it has not seen;
  the walk stops at the first event still pending or processed inside the window.
* ``jobs``: done and cancelled jobs older than ``job_days`` are deleted; dead ones stay for the
  operator. Deleting a finished job frees its key, so only jobs whose key cannot come back are
  deleted (see ``docs/retention.md``): every key is either unique by construction (a time, a
  counter, an id), guarded by a row that stays (``messages``, ``tasks``, the timeline's
  ``rule.fired`` notes while their event exists; an event id is never reused), or, for a
  sequence step, kept while its enrolment is live.
* ``deliveries``: the outbound delivery log older than ``delivery_days`` is deleted.
* ``timeline``: rows older than ``timeline_days`` keep kind, time, rule and event (what replays
  read) and lose their detail.
* history, after ``history_days``: processed events are deleted (their dedupe key goes with
  them: the dedupe window), except one a live enrolment still reads (it goes, with its rows, in a
  later pass once the enrolment has ended); then the timeline rows and
  score-ledger rows of events that are gone (or had none) go, the ledger's summed into one row
  per contact and component so every score still adds up. A row whose event still exists stays,
  since replaying that event reads it.

Every batch is one short write transaction of at most ``batch_size`` rows, followed by a pause
at least as long as the transaction held the writer, so ingest and processing always get the
database in between. On SQLite the freed pages then go back to the file system a few at a time
(``PRAGMA incremental_vacuum``) when the file allows it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any, NamedTuple

from sqlalchemy import Connection

from nurture import jobs
from nurture.clock import Clock
from nurture.config import Settings
from nurture.database.engine import Database
from nurture.errors import StorageUnavailable
from nurture.storage import retention as store

log = logging.getLogger("nurture.retention")

JOB_KIND = "retention_prune"
RAW_MARK = "events.raw"
DETAIL_MARK = "timeline.detail"
EVENTS_MARK = store.EVENTS_MARK
TIMELINE_MARK = "timeline.deleted"
LEDGER_MARK = "score_ledger.folded"
# Pages per incremental-vacuum transaction (2 MB at the default page size).
VACUUM_STEP_PAGES = 500
MIN_PAUSE_SECONDS = 0.005
_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class Policy:
    """The retention windows in days (0: keep forever) and the rows per transaction."""

    raw_days: int = 30
    job_days: int = 14
    delivery_days: int = 30
    timeline_days: int = 180
    history_days: int = 365
    batch_size: int = 500

    @classmethod
    def from_settings(cls, settings: Settings) -> Policy:
        return cls(
            raw_days=settings.retention_raw_days,
            job_days=settings.retention_job_days,
            delivery_days=settings.retention_delivery_days,
            timeline_days=settings.retention_timeline_days,
            history_days=settings.retention_history_days,
            batch_size=settings.retention_batch_size,
        )

    @property
    def enabled(self) -> bool:
        windows = (self.raw_days, self.job_days, self.delivery_days, self.timeline_days)
        return any((*windows, self.history_days))


@dataclass
class Pruned:
    """One table's share of a pass: rows changed (or, in a dry run, that would be). ``key``:
    its name in ``counts()`` and the pass's log line."""

    table: str
    action: str
    days: int
    key: str = ""
    rows: int = 0
    batches: int = 0
    longest_write_seconds: float = 0.0


@dataclass
class PruneReport:
    items: list[Pruned]
    dry_run: bool
    before: store.Space
    after: store.Space
    vacuumed_pages: int = 0
    writes: int = 0
    longest_write_seconds: float = 0.0
    longest_vacuum_seconds: float = 0.0

    @property
    def rows(self) -> int:
        return sum(i.rows for i in self.items)

    @property
    def freed_bytes(self) -> int:
        return self.before.bytes - self.after.bytes

    def counts(self) -> dict[str, int]:
        return {i.key or i.table: i.rows for i in self.items}


class Walk(NamedTuple):
    """The outcome of one batch of an id-ordered walk: the ids to change, the last id handled
    (the new mark), and whether the walk must stop (it met a row still inside its window)."""

    ids: list[int]
    last: int
    stop: bool


def raw_walk(
    rows: Sequence[tuple[int, str, datetime | None, bool]], after: int, cutoff: datetime
) -> Walk:
    ids: list[int] = []
    last = after
    for event_id, status, processed_at, has_raw in rows:
        if status == "failed":  # keeps its raw for a replay; nothing to wait for
            last = event_id
            continue
        if status != "processed" or processed_at is None or processed_at >= cutoff:
            return Walk(ids, last, True)  # pending, or processed inside the window
        if has_raw:
            ids.append(event_id)
        last = event_id
    return Walk(ids, last, False)


def history_walk(
    rows: Sequence[tuple[int, str, datetime | None, bool]], after: int, cutoff: datetime
) -> Walk:
    """Events ``(id, status, processed_at, held)``: processed before ``cutoff`` and not held by a
    live enrolment go; failed ones and held ones are passed over (they stay); the walk stops at
    the first one pending or processed inside the window."""
    ids: list[int] = []
    last = after
    for event_id, status, processed_at, held in rows:
        if status == "failed":
            last = event_id
            continue
        if status != "processed" or processed_at is None or processed_at >= cutoff:
            return Walk(ids, last, True)
        if not held:
            ids.append(event_id)
        last = event_id
    return Walk(ids, last, False)


def fate_walk(rows: Sequence[tuple[int, datetime, int]], after: int, cutoff: datetime) -> Walk:
    """Rows ``(id, at, fate)`` of a table that follows the events (``storage.retention._fate``):
    old ones whose event is gone go, those whose event stays are passed over, and the walk stops
    inside the window or at a row whose event the events pass has not reached yet."""
    ids: list[int] = []
    last = after
    for row_id, at, fate in rows:
        if at >= cutoff or fate == store.LATER:
            return Walk(ids, last, True)
        if fate == store.GONE:
            ids.append(row_id)
        last = row_id
    return Walk(ids, last, False)


def aged_walk(rows: Sequence[tuple[Any, ...]], after: int, cutoff: datetime) -> Walk:
    """Rows ``(id, at[, worth_changing])``: the prefix older than ``cutoff``."""
    ids: list[int] = []
    last = after
    for row in rows:
        if row[1] >= cutoff:
            return Walk(ids, last, True)
        if len(row) < 3 or row[2]:
            ids.append(row[0])
        last = row[0]
    return Walk(ids, last, False)


class Pruner:
    """Runs one pass. ``pause`` is called between transactions (``time.sleep``; tests pass a
    recorder); ``heartbeat`` after each one (a job's ``ctx.heartbeat``)."""

    def __init__(
        self,
        db: Database,
        policy: Policy,
        *,
        pause: Callable[[float], None] = time.sleep,
        heartbeat: Callable[[], None] | None = None,
        vacuum_step_pages: int = VACUUM_STEP_PAGES,
    ) -> None:
        self.db = db
        self.policy = policy
        self.pause = pause
        self.heartbeat = heartbeat
        self.vacuum_step_pages = vacuum_step_pages
        self._items: dict[str, Pruned] = {}
        self.writes = 0
        self.longest_write = 0.0
        self.longest_vacuum = 0.0

    def run(self, now: datetime, *, dry_run: bool = False) -> PruneReport:
        with self.db.read() as conn:
            before = store.space(conn)
        p = self.policy
        # History first: a row about to be deleted is not thinned out first (on SQLite thinning
        # rewrites the row), and the timeline and the ledger then see the events that went.
        items = [
            Pruned("events", "deleted (history)", p.history_days, "events_deleted"),
            Pruned("timeline", "deleted (history)", p.history_days, "timeline_deleted"),
            Pruned("score_ledger", "summed (history)", p.history_days, "score_ledger_folded"),
            Pruned("events", "deleted (enrolment ended)", p.history_days, "events_released"),
            Pruned("events", "raw payload cleared", p.raw_days),
            Pruned("jobs", "deleted (done, cancelled)", p.job_days),
            Pruned("deliveries", "deleted", p.delivery_days),
            Pruned("timeline", "detail trimmed", p.timeline_days),
        ]
        passes = (
            self._forget_events,
            self._forget_timeline,
            self._fold_ledger,
            self._release,
            self._raw,
            self._jobs,
            self._deliveries,
            self._timeline,
        )
        self._items = {i.key: i for i in items}
        for item, one in zip(items, passes, strict=True):
            if item.days > 0:
                one(item, now - timedelta(days=item.days), now, dry_run)
        vacuumed = 0 if dry_run else self.reclaim()
        with self.db.read() as conn:
            after = store.space(conn)
        return PruneReport(
            items,
            dry_run,
            before,
            after,
            vacuumed,
            self.writes,
            self.longest_write,
            self.longest_vacuum,
        )

    # -- transactions ---------------------------------------------------------------------

    @contextmanager
    def _write(self, item: Pruned | None) -> Iterator[Connection]:
        """One short write transaction, timed from the moment it holds the writer to its commit,
        then a pause at least as long, so the pass never takes more than half the writer's time.
        ``item``: the table it prunes (``None``: a vacuum step)."""
        with self.db.begin() as conn:
            started = time.perf_counter()
            yield conn
        held = time.perf_counter() - started
        self.writes += 1
        self.longest_write = max(self.longest_write, held)
        if item is None:
            self.longest_vacuum = max(self.longest_vacuum, held)
        else:
            item.longest_write_seconds = max(item.longest_write_seconds, held)
        if self.heartbeat is not None:
            self.heartbeat()
        self.pause(max(MIN_PAUSE_SECONDS, held))

    def _batch(self, item: Pruned, dry_run: bool) -> Any:
        return self.db.read() if dry_run else self._write(item)

    # -- the tables -----------------------------------------------------------------------

    def _raw(self, item: Pruned, cutoff: datetime, now: datetime, dry_run: bool) -> None:
        self._walk(
            item, RAW_MARK, store.events_after, raw_walk, store.clear_raw, cutoff, now, dry_run
        )

    def _timeline(self, item: Pruned, cutoff: datetime, now: datetime, dry_run: bool) -> None:
        self._walk(
            item,
            DETAIL_MARK,
            store.timeline_after,
            aged_walk,
            store.trim_detail,
            cutoff,
            now,
            dry_run,
        )

    def _forget_events(self, item: Pruned, cutoff: datetime, now: datetime, dry: bool) -> None:
        fetch, apply = store.events_held_after, store.delete_events
        self._walk(item, EVENTS_MARK, fetch, history_walk, apply, cutoff, now, dry)

    def _forget_timeline(self, item: Pruned, cutoff: datetime, now: datetime, dry: bool) -> None:
        fetch, apply = store.timeline_fate_after, store.delete_timeline
        self._walk(item, TIMELINE_MARK, fetch, fate_walk, apply, cutoff, now, dry)

    def _fold_ledger(self, item: Pruned, cutoff: datetime, now: datetime, dry: bool) -> None:
        fetch, apply = store.ledger_fate_after, store.fold_ledger
        self._walk(item, LEDGER_MARK, fetch, fate_walk, apply, cutoff, now, dry)

    def _release(self, item: Pruned, cutoff: datetime, now: datetime, dry: bool) -> None:
        """The events the walk passed over because a live enrolment read them, once none does:
        each goes with its timeline rows, its ledger rows summed, in one transaction."""
        timeline_item = self._items["timeline_deleted"]
        ledger_item = self._items["score_ledger_folded"]
        while True:
            with self._batch(item, dry) as conn:
                found = store.released_events(conn, cutoff, self.policy.batch_size)
                notes = store.timeline_of_events(conn, found)
                ledger = store.ledger_of_events(conn, found)
                if dry:
                    deleted, trimmed, folded = len(found), len(notes), len(ledger)
                else:
                    folded = store.fold_ledger(conn, ledger)
                    trimmed = store.delete_timeline(conn, notes)
                    deleted = store.delete_events(conn, [event_id for event_id, _ in found])
            item.rows += deleted
            item.batches += 1
            timeline_item.rows += trimmed
            ledger_item.rows += folded
            if len(found) < self.policy.batch_size or (dry and found):
                return

    def _walk(
        self,
        item: Pruned,
        mark: str,
        fetch: Callable[[Connection, int, int], Sequence[Any]],
        decide: Callable[[Sequence[Any], int, datetime], Walk],
        apply: Callable[[Connection, Sequence[int]], int],
        cutoff: datetime,
        now: datetime,
        dry_run: bool,
    ) -> None:
        """Thin rows out in place, by id from the table's mark (a dry run walks from the same
        mark without moving it)."""
        size = self.policy.batch_size
        after: int | None = None
        while True:
            with self._batch(item, dry_run) as conn:
                if dry_run:
                    after = store.read_mark(conn, mark) if after is None else after
                else:
                    after = store.take_mark(conn, mark, now)
                rows = fetch(conn, after, size)
                walk = decide(rows, after, cutoff)
                changed = len(walk.ids) if dry_run else apply(conn, walk.ids)
                if not dry_run and walk.last > after:
                    store.set_mark(conn, mark, walk.last, now)
            item.rows += changed
            item.batches += 1
            after = walk.last
            if walk.stop or len(rows) < size:
                return

    def _deliveries(self, item: Pruned, cutoff: datetime, now: datetime, dry_run: bool) -> None:
        # Deleted rows leave the table, so the oldest remaining row is always the first one.
        size = self.policy.batch_size
        after = 0
        while True:
            with self._batch(item, dry_run) as conn:
                rows = store.deliveries_after(conn, after, size)
                walk = aged_walk(rows, after, cutoff)
                changed = len(walk.ids) if dry_run else store.delete_deliveries(conn, walk.ids)
            item.rows += changed
            item.batches += 1
            after = walk.last
            if walk.stop or len(rows) < size:
                return

    def _jobs(self, item: Pruned, cutoff: datetime, now: datetime, dry_run: bool) -> None:
        size = self.policy.batch_size
        if dry_run:
            with self.db.read() as conn:
                item.rows = store.count_finished_jobs(conn, cutoff)
            item.batches = item.rows // size + 1
            return
        while True:
            with self._write(item) as conn:
                ids = store.finished_jobs(conn, cutoff, size)
                deleted = store.delete_jobs(conn, ids, cutoff)
            item.rows += deleted
            item.batches += 1
            if len(ids) < size:
                return

    # -- space ----------------------------------------------------------------------------

    def reclaim(self) -> int:
        """SQLite with ``auto_vacuum=INCREMENTAL``: give the free pages back to the file system,
        ``vacuum_step_pages`` per transaction. Returns how many pages went."""
        if not self.db.is_sqlite:
            return 0
        with self.db.read() as conn:
            space = store.space(conn)
            free = store.free_pages(conn)
        if not space.incremental or free == 0:
            return 0
        released = 0
        for _ in range(free // self.vacuum_step_pages + 1):
            with self._write(None) as conn:
                before = store.free_pages(conn)
                if before == 0:
                    break
                store.incremental_vacuum(conn, min(before, self.vacuum_step_pages))
                released += before - store.free_pages(conn)
        return released


# -- the recurring job --------------------------------------------------------------------------


def next_run(now: datetime, interval: timedelta) -> datetime:
    """The first slot strictly after ``now``. Slots are aligned (multiples of ``interval`` since
    a fixed epoch), so every worker and every restart computes the same job key."""
    slots = (now - _EPOCH) // interval + 1
    return _EPOCH + slots * interval


def run_key(at: datetime) -> str:
    return f"{JOB_KIND}:{at:%Y%m%dT%H%M%SZ}"


def schedule_next(conn: Connection, interval: timedelta, now: datetime) -> jobs.JobRef:
    at = next_run(now, interval)
    return jobs.enqueue(conn, kind=JOB_KIND, key=run_key(at), run_at=at, payload={}, now=now)


def ensure_scheduled(db: Database, policy: Policy, interval: timedelta, now: datetime) -> bool:
    """Queue the next pass unless retention is off; True if a job was new."""
    if not policy.enabled:
        return False
    with db.begin() as conn:
        return schedule_next(conn, interval, now).created


def run_pass(db: Database, policy: Policy, interval: timedelta, ctx: jobs.JobContext) -> None:
    if not policy.enabled:
        return  # switched off since this run was queued: the chain ends here
    # The next run first: a pass that fails is retried, and the chain goes on either way.
    ensure_scheduled(db, policy, interval, ctx.now)
    try:
        report = Pruner(db, policy, heartbeat=ctx.heartbeat).run(ctx.now)
    except StorageUnavailable as exc:
        # Busy past the timeout (or gone): give way. What was pruned is committed and the
        # marks say where to go on, so the next pass simply continues; retrying now would only
        # add to the load, and a dead job per busy hour would pile up.
        log.warning(
            "retention pass stopped early",
            extra={"action": "retention.busy", "error": str(exc)},
        )
        return
    log.info(
        "retention pass",
        extra={
            "action": "retention.prune",
            **report.counts(),
            "vacuumed_pages": report.vacuumed_pages,
            "freed_bytes": report.freed_bytes,
            "writes": report.writes,
            "longest_write_ms": round(report.longest_write_seconds * 1000, 1),
            "longest_vacuum_ms": round(report.longest_vacuum_seconds * 1000, 1),
        },
    )


def interval_of(settings: Settings) -> timedelta:
    return timedelta(minutes=settings.retention_interval_minutes)


def register(registry: jobs.HandlerRegistry, db: Database, settings: Settings) -> None:
    handler = partial(run_pass, db, Policy.from_settings(settings), interval_of(settings))
    registry.register(JOB_KIND, handler, max_attempts=3)


def schedule_loop(
    db: Database, clock: Clock, settings: Settings
) -> Callable[[asyncio.Event], Awaitable[None]]:
    """A worker loop: at start, make sure the next pruning pass is queued, then end."""
    policy, interval = Policy.from_settings(settings), interval_of(settings)

    async def run(stop: asyncio.Event) -> None:
        if await asyncio.to_thread(ensure_scheduled, db, policy, interval, clock.now()):
            log.info("retention pass queued", extra={"action": "retention.schedule"})

    return run
