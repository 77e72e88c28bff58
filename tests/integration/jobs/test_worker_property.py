"""Property: for any interleaving of enqueue / cancel / reschedule / claim / run / crash / time,
every job that was never cancelled has its effect exactly once (its handler runs once, plus
once more per worker that died after the effect and before recording it), and a job never
starts after a cancel that succeeded."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Iterator
from datetime import timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import delete

from nurture.bootstrap import Container, build_container
from nurture.clock import VirtualClock
from nurture.config import Settings
from nurture.jobs import HandlerRegistry, JobContext, JobWorker, cancel, enqueue, reschedule
from nurture.jobs.worker import Attempt
from nurture.schema.tables import jobs as jobs_table
from nurture.storage import jobs as store
from tests.conftest import START

KEYS = [f"k{i}" for i in range(5)]
LEASE = 30

key = st.sampled_from(KEYS)
delay = st.sampled_from([0, 10, 60])
worker_ix = st.integers(0, 1)
op = st.one_of(
    st.tuples(st.just("enqueue"), key, delay),
    st.tuples(st.just("cancel"), key),
    st.tuples(st.just("reschedule"), key, delay),
    st.tuples(st.just("claim"), worker_ix, st.integers(1, 3)),
    st.tuples(st.just("run"), worker_ix),
    st.tuples(st.just("crash"), worker_ix, st.booleans()),
    st.tuples(st.just("advance"), st.sampled_from([5, 31, 61])),
)


@pytest.fixture
def world(database_url: str) -> Iterator[tuple[Container, VirtualClock]]:
    clock = VirtualClock(START)
    c = build_container(Settings(database_url=database_url, job_lease_seconds=LEASE), clock=clock)
    yield c, clock
    c.close()


class Model:
    def __init__(self, c: Container, clock: VirtualClock) -> None:
        self.c, self.clock = c, clock
        self.invocations: Counter[str] = Counter()
        self.effects: set[str] = set()
        self.lost_after_effect: Counter[str] = Counter()
        self.enqueued: set[str] = set()
        self.cancelled: set[str] = set()
        self.generation = 0
        self.registry = HandlerRegistry()
        self.registry.register("work", self.handler, max_attempts=1000)
        self.workers = [self.new_worker(), self.new_worker()]
        self.held: list[list[Attempt]] = [[], []]

    def handler(self, ctx: JobContext) -> None:
        self.invocations[ctx.key] += 1
        self.effects.add(ctx.key)  # keyed, idempotent: what "effect exactly once" rests on

    def new_worker(self) -> JobWorker:
        self.generation += 1
        return JobWorker(self.c, self.registry, worker_id=f"w{self.generation}")

    def apply(self, step: tuple[object, ...]) -> None:
        name = step[0]
        now = self.clock.now()
        if name == "enqueue":
            k, d = step[1], step[2]
            assert isinstance(k, str) and isinstance(d, int)
            with self.c.db.begin() as conn:
                ref = enqueue(
                    conn, kind="work", key=k, run_at=now + timedelta(seconds=d), payload={}, now=now
                )
            assert ref.created == (k not in self.enqueued)
            self.enqueued.add(k)
        elif name == "cancel":
            k = str(step[1])
            with self.c.db.begin() as conn:
                if cancel(conn, k, now=now):
                    self.cancelled.add(k)
        elif name == "reschedule":
            k, d = step[1], step[2]
            assert isinstance(k, str) and isinstance(d, int)
            with self.c.db.begin() as conn:
                moved = reschedule(conn, k, now + timedelta(seconds=d), now=now)
            assert not (moved and k in self.cancelled)
        elif name == "claim":
            w, n = step[1], step[2]
            assert isinstance(w, int) and isinstance(n, int)
            attempts, _ = self.workers[w].claim(n)
            started = {a.ctx.key for a in attempts}
            assert not started & self.cancelled, "a cancelled job started"
            self.held[w].extend(attempts)
        elif name == "run":
            w = int(step[1])  # type: ignore[call-overload]
            self.run_held(w)
        elif name == "crash":
            w, after_effect = step[1], step[2]
            assert isinstance(w, int)
            for attempt in self.held[w]:
                if after_effect:
                    asyncio.run(self.workers[w].execute(attempt))
                    self.lost_after_effect[attempt.ctx.key] += 1
            self.held[w] = []
            self.workers[w] = self.new_worker()
        elif name == "advance":
            # Live workers renew their leases every third of a lease, as the heartbeat loop does;
            # only a crashed worker's leases run out.
            left = int(step[1])  # type: ignore[call-overload]
            while left > 0:
                tick = min(left, LEASE // 3)
                self.clock.advance(timedelta(seconds=tick))
                left -= tick
                for w in (0, 1):
                    held = [(a.id, a.number) for a in self.held[w]]
                    self.workers[w].extend_leases(held)

    def run_held(self, w: int) -> None:
        worker = self.workers[w]
        outcomes = [asyncio.run(worker.execute(a)) for a in self.held[w]]
        worker.finish(outcomes)
        self.held[w] = []

    def settle(self) -> None:
        for w in (0, 1):
            self.run_held(w)
        last = self.new_worker()
        for _ in range(10):
            self.clock.advance(timedelta(seconds=LEASE + 1))
            asyncio.run(last.drain())


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(steps=st.lists(op, max_size=25))
def test_every_uncancelled_job_takes_effect_exactly_once(
    world: tuple[Container, VirtualClock], steps: list[tuple[object, ...]]
) -> None:
    c, clock = world
    clock.set(START)
    with c.db.begin() as conn:
        conn.execute(delete(jobs_table))
    model = Model(c, clock)
    for step in steps:
        model.apply(step)
    model.settle()

    with c.db.read() as conn:
        rows = {k: store.get_by_key(conn, k) for k in model.enqueued}
    for k, row in rows.items():
        assert row is not None
        assert row["status"] in ("done", "cancelled"), (k, row)
        if k not in model.cancelled:
            assert row["status"] == "done"
            assert k in model.effects
            assert model.invocations[k] == 1 + model.lost_after_effect[k], k
        else:
            assert model.invocations[k] <= 1 + model.lost_after_effect[k], k
    assert set(model.invocations) <= model.enqueued
