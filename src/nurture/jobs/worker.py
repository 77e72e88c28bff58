"""The job worker: claim due jobs in batches under a lease, run them, record what happened.

One claim loop per process keeps at most ``concurrency`` attempts in flight. Finished attempts
are recorded by a single finisher in one transaction per group (the durable commit is paid per
group, not per job), and one heartbeat renews the leases of attempts still making progress. A
worker killed outright loses nothing: its leases expire and any worker reclaims the jobs. On
SIGTERM it stops claiming, lets in-flight attempts finish within the grace period, hands the
rest back, and records everything before returning.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import random
import socket
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol, TypeVar

from nurture.clock import Clock
from nurture.config import Settings
from nurture.database.engine import Database
from nurture.errors import ProviderError, RateLimited
from nurture.jobs.registry import HandlerRegistry, HandlerSpec, JobContext
from nurture.jobs.wakeup import Wakeup
from nurture.logs import redact
from nurture.storage import jobs as store

log = logging.getLogger("nurture.jobs")
T = TypeVar("T")

# Loops a worker process runs beside event processing (``JobWorker.run`` is one).
WorkerLoop = Callable[[asyncio.Event], Awaitable[None]]

MAX_ERROR_LENGTH = 2000
# When a due job exists but could not be taken (another worker holds it), look again soon.
CONTENDED_PAUSE_SECONDS = 0.05


@dataclass(frozen=True, slots=True)
class Outcome:
    """What one attempt came to; ``store.finish`` writes it."""

    id: int
    attempt: int
    status: str  # done | failed (retry at run_at) | dead | scheduled (handed back)
    now: datetime
    run_at: datetime | None = None
    error: str | None = None
    refund: bool = False  # the attempt was cut short by us, so it does not count

    def row(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "attempt": self.attempt,
            "status": self.status,
            "run_at": self.run_at,
            "error": self.error,
            "refund": self.refund,
            "now": self.now,
        }


@dataclass(slots=True)
class Attempt:
    ctx: JobContext
    spec: HandlerSpec
    max_attempts: int

    @property
    def id(self) -> int:
        return self.ctx.job_id

    @property
    def number(self) -> int:
        return self.ctx.attempt


def describe(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}"
    return redact(text[:MAX_ERROR_LENGTH])


def decide(
    spec: HandlerSpec,
    max_attempts: int,
    attempt: int,
    exc: BaseException | None,
    now: datetime,
    rng: random.Random,
) -> tuple[str, datetime | None, str | None]:
    """Pure: ``(status, retry run_at, error)`` after attempt number ``attempt`` raised ``exc``.

    ``RateLimited`` (our own limiter's wait) hands the job back for then, ``scheduled``, and the
    attempt is refunded; ``ProviderError(permanent=True)`` is dead at once; ``retry_after`` is a
    lower bound on the wait; anything else backs off by the kind's ``RetryPolicy`` until
    ``max_attempts``.
    """
    if exc is None:
        return "done", None, None
    error = describe(exc)
    if isinstance(exc, RateLimited):
        return "scheduled", now + timedelta(seconds=exc.retry_after or 0.0), error
    if isinstance(exc, ProviderError) and exc.permanent:
        return "dead", None, error
    policy = spec.retry
    if policy.max_attempts != max_attempts:
        policy = dataclasses.replace(policy, max_attempts=max_attempts)
    retry_after = exc.retry_after if isinstance(exc, ProviderError) else None
    when = policy.next_run(attempt, now, rng, retry_after)
    if when is None:
        return "dead", None, error
    return "failed", when, error


class WorkerHost(Protocol):
    """What a job worker runs on: the database it claims from, the clock it stamps with, and
    the ``job_*`` settings. ``bootstrap.Container`` is one; handlers get their own
    collaborators when they are registered."""

    @property
    def db(self) -> Database: ...

    @property
    def clock(self) -> Clock: ...

    @property
    def settings(self) -> Settings: ...


def default_worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


class JobWorker:
    def __init__(
        self,
        host: WorkerHost,
        registry: HandlerRegistry,
        *,
        worker_id: str | None = None,
        batch_size: int | None = None,
        concurrency: int | None = None,
        lease_seconds: float | None = None,
        grace_seconds: float | None = None,
        max_idle_seconds: float | None = None,
        rng: random.Random | None = None,
    ) -> None:
        s = host.settings
        self.db = host.db
        self.clock = host.clock
        self.registry = registry
        self.worker_id = (worker_id or default_worker_id())[:100]
        self.batch_size = batch_size or s.job_batch_size
        self.concurrency = concurrency or s.job_concurrency
        self.lease = timedelta(seconds=lease_seconds or s.job_lease_seconds)
        self.grace_seconds = s.job_grace_seconds if grace_seconds is None else grace_seconds
        # Enqueues only NOTIFY for jobs due within the wake horizon, so never sleep past it.
        self.max_idle_seconds = min(
            max_idle_seconds or s.job_max_idle_seconds, store.WAKE_HORIZON.total_seconds()
        )
        self.rng = rng or random.Random()
        self.wakeup = Wakeup()
        self._next_reap: datetime | None = None
        self._inflight: dict[int, tuple[Attempt, asyncio.Task[None]]] = {}
        self._outcomes: list[Outcome] = []
        self._unflushed: dict[int, int] = {}  # job id -> attempt, finished but not yet recorded
        self._flush = asyncio.Event()
        self._slot = asyncio.Event()
        self._bookkeeping: ThreadPoolExecutor | None = None

    # -- the three steps (synchronous database work runs in a thread) ---------------------------

    def claim(self, limit: int) -> tuple[list[Attempt], datetime | None]:
        """Take up to ``limit`` due jobs. Also returns, when fewer were due, the next ``run_at``.

        Expired leases are returned to the queue first (at most every quarter lease).
        """
        kinds = self.registry.kinds
        now = self.clock.now()
        if self._next_reap is None or now >= self._next_reap:
            with self.db.begin() as conn:
                reaped = store.reap_expired(conn, now)
            self._next_reap = now + self.lease / 4
            if reaped:
                log.warning(
                    "reclaimed jobs of a lost worker",
                    extra={"action": "jobs.reaped", "count": reaped},
                )
        attempts: list[Attempt] = []
        exhausted: list[Outcome] = []
        next_at: datetime | None = None
        with self.db.begin() as conn:
            rows = store.claim(
                conn,
                kinds=kinds,
                now=now,
                lease_until=now + self.lease,
                worker=self.worker_id,
                limit=limit,
            )
            for row in rows:
                spec = self.registry.get(row["kind"])
                assert spec is not None  # only registered kinds are claimed
                max_attempts = row["max_attempts"] or spec.max_attempts
                if row["attempts"] > max_attempts:
                    # Only lost or handed-back attempts get here: a job that keeps killing its
                    # worker must stop somewhere.
                    exhausted.append(
                        Outcome(
                            row["id"],
                            row["attempts"],
                            "dead",
                            now,
                            error=row["last_error"] or "attempts exhausted",
                        )
                    )
                    continue
                attempts.append(Attempt(self._context(row, now), spec, max_attempts))
            store.finish(conn, [o.row() for o in exhausted], self.worker_id)
            if len(rows) < limit:
                next_at = store.next_run_at(conn, kinds)
        return attempts, next_at

    def _context(self, row: dict[str, Any], now: datetime) -> JobContext:
        return JobContext(
            job_id=row["id"],
            key=row["key"],
            kind=row["kind"],
            payload=row["payload"],
            attempt=row["attempts"],
            contact_id=row["contact_id"],
            enrollment_id=row["enrollment_id"],
            now=now,
        )

    async def execute(self, attempt: Attempt) -> Outcome:
        """Run the handler; its exception, if any, decides the outcome."""
        error: Exception | None = None
        try:
            if attempt.spec.is_async:
                await attempt.spec.fn(attempt.ctx)  # type: ignore[misc]
            else:
                await asyncio.to_thread(attempt.spec.fn, attempt.ctx)
        except Exception as exc:  # any handler failure is data for the retry policy
            error = exc
        now = self.clock.now()
        status, run_at, message = decide(
            attempt.spec, attempt.max_attempts, attempt.number, error, now, self.rng
        )
        if status == "scheduled":
            log.info(
                "job waits for its rate limit",
                extra={
                    "action": "jobs.deferred",
                    "job_id": attempt.id,
                    "kind": attempt.ctx.kind,
                    "run_at": run_at.isoformat() if run_at else None,
                },
            )
            return Outcome(attempt.id, attempt.number, status, now, run_at, message, refund=True)
        if error is not None:
            log.log(
                logging.ERROR if status == "dead" else logging.WARNING,
                "job attempt failed",
                extra={
                    "action": f"jobs.{status}",
                    "job_id": attempt.id,
                    "kind": attempt.ctx.kind,
                    "attempt": attempt.number,
                    "error": message,
                },
            )
        return Outcome(attempt.id, attempt.number, status, now, run_at, message)

    def finish(self, outcomes: Sequence[Outcome]) -> None:
        with self.db.begin() as conn:
            store.finish(conn, [o.row() for o in outcomes], self.worker_id)

    def extend_leases(self, leases: Sequence[tuple[int, int]]) -> None:
        with self.db.begin() as conn:
            store.extend_leases(conn, leases, self.worker_id, self.clock.now() + self.lease)

    def release(self, attempt: Attempt, reason: str) -> Outcome:
        """Hand an unfinished attempt back: due now, and the attempt does not count."""
        return Outcome(
            attempt.id,
            attempt.number,
            "scheduled",
            self.clock.now(),
            self.clock.now(),
            reason,
            True,
        )

    # -- step by step (tests, ``simulate``) ---------------------------------------------------

    async def run_once(self) -> int:
        """Claim one batch, run it (bounded concurrency), record it; returns how many ran."""
        attempts, _ = await asyncio.to_thread(self.claim, self.batch_size)
        if not attempts:
            return 0
        gate = asyncio.Semaphore(self.concurrency)

        async def bounded(a: Attempt) -> Outcome:
            async with gate:
                return await self.execute(a)

        outcomes = await asyncio.gather(*(bounded(a) for a in attempts))
        await asyncio.to_thread(self.finish, outcomes)
        return len(attempts)

    async def drain(self, max_batches: int = 100_000) -> int:
        """Run batches until nothing is due at the clock's current time."""
        total = 0
        for _ in range(max_batches):
            ran = await self.run_once()
            if not ran:
                break
            total += ran
        return total

    # -- the long-running loop ------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Work until ``stop`` is set, then drain. Fits ``runtime.Worker``'s ``extra_loops``."""
        self.wakeup.bind(asyncio.get_running_loop())
        self._flush, self._slot = asyncio.Event(), asyncio.Event()
        # Claims, finishes and heartbeats get their own threads: on the default executor they
        # queued behind synchronous handlers, so a few slow handlers delayed the heartbeat past
        # the lease and their jobs were taken again while still running.
        self._bookkeeping = ThreadPoolExecutor(3, thread_name_prefix="jobs-bookkeeping")
        closing = asyncio.Event()
        remove_hook = (
            store.on_commit(self.db.engine, self.wakeup.notify) if self.db.is_sqlite else None
        )
        finisher = asyncio.create_task(self._finisher(closing))
        helpers = [
            asyncio.create_task(self._heartbeats()),
            asyncio.create_task(self._wake_on(stop)),
        ]
        if not self.db.is_sqlite:
            helpers.append(asyncio.create_task(store.listen(self.db, self._on_notify, closing)))
        log.info(
            "job worker started",
            extra={"action": "jobs.start", "worker": self.worker_id, "kinds": self.registry.kinds},
        )
        try:
            await self._claim_loop(stop)
        finally:
            await self._drain()
            closing.set()
            self._flush.set()
            await finisher
            for task in helpers:
                task.cancel()
            await asyncio.gather(*helpers, return_exceptions=True)
            if remove_hook is not None:
                remove_hook()
            self._bookkeeping.shutdown(wait=False)
            self._bookkeeping = None
            log.info("job worker stopped", extra={"action": "jobs.stop", "worker": self.worker_id})

    async def _claim_loop(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            free = self.concurrency - len(self._inflight)
            if free <= 0:
                self._slot.clear()
                await self._slot.wait()
                continue
            limit = min(free, self.batch_size)
            try:
                attempts, next_at = await self._in_bookkeeping(self.claim, limit)
            except Exception:
                log.exception("job claim failed", extra={"action": "jobs.claim_error"})
                await self._idle(None)
                continue
            if stop.is_set():  # claimed while the stop arrived: hand them back untouched
                self._outcomes.extend(self.release(a, "released at shutdown") for a in attempts)
                self._flush.set()
                break
            for attempt in attempts:
                self._start(attempt)
            if len(attempts) < limit:
                await self._idle(next_at)

    async def _idle(self, next_at: datetime | None) -> None:
        now = self.clock.now()
        target = now + timedelta(seconds=self.max_idle_seconds)
        if next_at is not None and next_at < target:
            target = next_at
        timeout = (target - now).total_seconds()
        if timeout <= 0:
            timeout = CONTENDED_PAUSE_SECONDS
        self.wakeup.deadline = target
        try:
            await self.wakeup.wait(timeout)
        finally:
            self.wakeup.deadline = None

    async def _in_bookkeeping(self, fn: Callable[..., T], *args: Any) -> T:
        if self._bookkeeping is None:
            return await asyncio.to_thread(fn, *args)
        return await asyncio.get_running_loop().run_in_executor(self._bookkeeping, fn, *args)

    def _start(self, attempt: Attempt) -> None:
        task = asyncio.create_task(self._attempt(attempt))
        self._inflight[attempt.id] = (attempt, task)

    async def _attempt(self, attempt: Attempt) -> None:
        try:
            outcome = await self.execute(attempt)
        except asyncio.CancelledError:  # the grace period ran out during shutdown
            outcome = self.release(attempt, "released at shutdown before finishing")
        self._inflight.pop(attempt.id, None)
        self._unflushed[attempt.id] = attempt.number
        self._outcomes.append(outcome)
        self._flush.set()
        self._slot.set()

    async def _finisher(self, closing: asyncio.Event) -> None:
        failures = 0
        while True:
            if not self._outcomes:
                if closing.is_set():
                    return
                await self._flush.wait()
                self._flush.clear()
                continue
            batch, self._outcomes = self._outcomes, []
            try:
                await self._in_bookkeeping(self.finish, batch)
            except Exception:
                failures += 1
                log.exception(
                    "recording job outcomes failed", extra={"action": "jobs.finish_error"}
                )
                if closing.is_set() and failures >= 5:
                    return  # leases expire and other workers retake these jobs
                self._outcomes[:0] = batch
                await asyncio.sleep(min(0.2 * 2**failures, 5.0))
                continue
            failures = 0
            for o in batch:
                if self._unflushed.get(o.id) == o.attempt:
                    del self._unflushed[o.id]

    async def _heartbeats(self) -> None:
        period = self.lease.total_seconds() / 3
        limit = self.lease.total_seconds()
        while True:
            await asyncio.sleep(period)
            beat = time.monotonic()
            leases = [
                (a.id, a.number)
                for a, _ in self._inflight.values()
                if beat - a.ctx.last_beat < limit
            ]
            leases.extend(self._unflushed.items())
            if not leases:
                continue
            try:
                await self._in_bookkeeping(self.extend_leases, leases)
            except Exception:
                log.exception("lease renewal failed", extra={"action": "jobs.heartbeat_error"})

    async def _drain(self) -> None:
        tasks = [task for _, task in self._inflight.values()]
        if not tasks:
            return
        log.info(
            "draining jobs in flight",
            extra={"action": "jobs.drain", "count": len(tasks), "grace": self.grace_seconds},
        )
        _, pending = await asyncio.wait(tasks, timeout=self.grace_seconds)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)

    async def _wake_on(self, stop: asyncio.Event) -> None:
        await stop.wait()
        self.wakeup.notify(None)
        self._slot.set()

    def _on_notify(self, payload: str | None) -> None:
        if payload is None:
            self.wakeup.notify(None)
            return
        try:
            run_at = datetime.fromisoformat(payload)
        except ValueError:
            run_at = None
        self.wakeup.notify(run_at)
