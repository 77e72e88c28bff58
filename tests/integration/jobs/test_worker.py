"""The scheduler against a real database (each test on SQLite and PostgreSQL)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta, timezone
from typing import Any

import pytest

from nurture.bootstrap import Container, build_container
from nurture.clock import SystemClock, VirtualClock
from nurture.config import Settings
from nurture.core.retry import RetryPolicy
from nurture.errors import Conflict, InvalidFields, NotFound, ProviderError, RateLimited
from nurture.jobs import (
    HandlerRegistry,
    JobContext,
    JobSpec,
    JobWorker,
    cancel,
    cancel_where,
    enqueue,
    enqueue_many,
    manage,
    reschedule,
)
from nurture.storage import jobs as store

FAST = RetryPolicy(base_seconds=10, factor=2, max_seconds=3600, max_attempts=3, jitter=0.0)


@pytest.fixture
def container(make_settings: Callable[..., Settings], clock: VirtualClock) -> Iterator[Container]:
    c = build_container(make_settings(job_lease_seconds=30), clock=clock)
    yield c
    c.close()


class Recorder:
    """Handlers whose behaviour each test scripts; records every call."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, int]] = []
        self.fail: dict[str, BaseException] = {}

    def __call__(self, ctx: JobContext) -> None:
        self.calls.append((ctx.key, ctx.attempt))
        exc = self.fail.get(ctx.key)
        if exc is not None:
            raise exc


@pytest.fixture
def rec() -> Recorder:
    return Recorder()


@pytest.fixture
def registry(rec: Recorder) -> HandlerRegistry:
    r = HandlerRegistry(default_retry=FAST)
    r.register("work", rec)
    return r


def worker(container: Container, registry: HandlerRegistry, name: str = "w1") -> JobWorker:
    return JobWorker(container, registry, worker_id=name, batch_size=50, concurrency=4)


def put(c: Container, key: str, delay: float = 0, **kw: Any) -> None:
    with c.db.begin() as conn:
        enqueue(
            conn,
            kind=kw.pop("kind", "work"),
            key=key,
            run_at=c.clock.now() + timedelta(seconds=delay),
            payload=kw.pop("payload", {"n": 1}),
            now=c.clock.now(),
            **kw,
        )


def job(c: Container, key: str) -> dict[str, Any]:
    with c.db.read() as conn:
        row = store.get_by_key(conn, key)
    assert row is not None
    return row


def drain(w: JobWorker) -> int:
    return asyncio.run(w.drain())


# -- enqueue ---------------------------------------------------------------------------------


def test_enqueue_is_idempotent_per_key(container: Container) -> None:
    now = container.clock.now()
    with container.db.begin() as conn:
        first = enqueue(conn, kind="work", key="k1", run_at=now, payload={"a": 1}, contact_id=7)
        again = enqueue(conn, kind="work", key="k1", run_at=now + timedelta(hours=1), payload={})
    assert first.created and not again.created and not again.replaced
    assert again.id == first.id
    assert again.run_at == now
    row = job(container, "k1")
    assert row["payload"] == {"a": 1}
    assert row["contact_id"] == 7
    assert row["run_at"].tzinfo is not None


def test_replace_overwrites_only_a_job_that_has_not_started(
    container: Container, registry: HandlerRegistry, clock: VirtualClock
) -> None:
    later = clock.now() + timedelta(hours=2)
    put(container, "k1", 60, payload={"v": 1})
    with container.db.begin() as conn:
        ref = enqueue(conn, kind="work", key="k1", run_at=later, payload={"v": 2}, replace=True)
    assert ref.replaced and not ref.created and ref.run_at == later
    assert job(container, "k1")["payload"] == {"v": 2}

    put(container, "k2")
    drain(worker(container, registry))
    with container.db.begin() as conn:
        ref = enqueue(conn, kind="work", key="k2", run_at=later, payload={"v": 3}, replace=True)
    assert not ref.replaced and ref.status == "done"


def test_enqueue_commits_with_the_callers_transaction(container: Container) -> None:
    with pytest.raises(RuntimeError), container.db.begin() as conn:
        enqueue(conn, kind="work", key="lost", run_at=container.clock.now(), payload={})
        raise RuntimeError("the contact update failed")
    with container.db.read() as conn:
        assert store.get_by_key(conn, "lost") is None


def test_enqueue_refuses_naive_times_and_bad_fields(container: Container) -> None:
    naive = container.clock.now().replace(tzinfo=None)
    with container.db.begin() as conn:
        with pytest.raises(ValueError, match="naive"):
            enqueue(conn, kind="work", key="k", run_at=naive, payload={})
        with pytest.raises(InvalidFields, match="key"):
            enqueue(conn, kind="work", key="", run_at=container.clock.now(), payload={})
        with pytest.raises(InvalidFields, match="max_attempts"):
            enqueue(
                conn, kind="work", key="k", run_at=container.clock.now(), payload={}, max_attempts=0
            )


def test_enqueue_many_skips_existing_keys(container: Container) -> None:
    now = container.clock.now()
    put(container, "k0")
    specs = [JobSpec("work", f"k{i}", now + timedelta(seconds=i), {"i": i}) for i in range(5)]
    with container.db.begin() as conn:
        assert enqueue_many(conn, specs, now=now) == 4
        assert enqueue_many(conn, specs, now=now) == 0
    with container.db.read() as conn:
        assert store.count_by_status(conn) == {"scheduled": 5}


def test_enqueue_many_stores_what_enqueue_stores(
    container: Container, registry: HandlerRegistry, rec: Recorder, clock: VirtualClock
) -> None:
    """The bulk path writes values itself (not through the column types): they must read back
    and sort exactly like rows written by ``enqueue``, whatever zone the caller's times are in."""
    now = clock.now()
    paris = timezone(timedelta(hours=2))
    specs = [
        # Later than k-core by a quarter second, given in another zone, microsecond-precise.
        JobSpec("work", "k-bulk", (now + timedelta(seconds=0.5)).astimezone(paris), {"é": [1]}),
        JobSpec("work", "k-whole", now + timedelta(seconds=2), {}, contact_id=3, enrollment_id=4),
        JobSpec("work", "k-dup", now + timedelta(seconds=1), {"first": True}, max_attempts=2),
        JobSpec("work", "k-dup", now, {"first": False}),
    ]
    with container.db.begin() as conn:
        enqueue(conn, kind="work", key="k-core", run_at=now + timedelta(seconds=0.25), payload={})
        assert enqueue_many(conn, specs, now=now) == 3  # a key repeated in one batch: first wins
    bulk = job(container, "k-bulk")
    assert bulk["run_at"] == now + timedelta(seconds=0.5)
    assert bulk["run_at"].utcoffset() == timedelta(0)
    assert bulk["payload"] == {"é": [1]}
    assert (bulk["attempts"], bulk["max_attempts"], bulk["status"]) == (0, None, "scheduled")
    assert bulk["created_at"] == bulk["updated_at"] == now
    whole = job(container, "k-whole")
    assert (whole["contact_id"], whole["enrollment_id"]) == (3, 4)
    dup = job(container, "k-dup")
    assert (dup["payload"], dup["max_attempts"]) == ({"first": True}, 2)

    clock.advance(timedelta(seconds=0.3))
    assert drain(worker(container, registry)) == 1
    assert rec.calls == [("k-core", 1)]
    with container.db.read() as conn:
        assert store.next_run_at(conn, ["work"]) == now + timedelta(seconds=0.5)
    clock.advance(timedelta(seconds=2))
    assert drain(worker(container, registry)) == 3
    with container.db.begin() as conn:
        assert cancel_where(conn, contact_id=3) == 0  # done already
        assert store.insert_many(conn, []) == 0
        with pytest.raises(ValueError, match="naive"):
            enqueue_many(conn, [JobSpec("work", "naive", now.replace(tzinfo=None), {})])


def test_commit_hook_reports_the_earliest_run_at_of_the_transaction(container: Container) -> None:
    """The in-process wake-up (SQLite) hears of a commit once, with its earliest ``run_at``,
    savepoints included, and never of a rollback."""
    now = container.clock.now()
    heard: list[Any] = []
    remove = store.on_commit(container.db.engine, heard.append)
    try:
        with container.db.begin() as conn:
            with conn.begin_nested():
                enqueue(conn, kind="work", key="a", run_at=now + timedelta(seconds=10), payload={})
            enqueue(conn, kind="work", key="b", run_at=now + timedelta(seconds=20), payload={})
            enqueue_many(conn, [JobSpec("work", "c", now + timedelta(days=9), {})], now=now)
        with pytest.raises(RuntimeError), container.db.begin() as conn:
            enqueue(conn, kind="work", key="d", run_at=now, payload={})
            raise RuntimeError("rolled back")
        with container.db.begin() as conn:
            assert reschedule(conn, "c", now + timedelta(seconds=5), now=now)
    finally:
        remove()
    assert heard == [now + timedelta(seconds=10), now + timedelta(seconds=5)]


def test_enqueue_many_counts_only_new_rows_across_chunks(container: Container) -> None:
    now = container.clock.now()
    put(container, "b1500")
    specs = [JobSpec("work", f"b{i}", now, {"i": i}) for i in range(2500)]
    with container.db.begin() as conn:
        assert enqueue_many(conn, specs, now=now) == 2499
    with container.db.read() as conn:
        assert store.count_by_status(conn) == {"scheduled": 2500}
        assert store.oldest_due(conn, now) == (2500, now)


# -- running ---------------------------------------------------------------------------------


def test_due_jobs_run_once_and_future_ones_wait(
    container: Container, registry: HandlerRegistry, rec: Recorder, clock: VirtualClock
) -> None:
    put(container, "now")
    put(container, "later", 3600)
    w = worker(container, registry)
    assert drain(w) == 1
    assert rec.calls == [("now", 1)]
    assert job(container, "now")["status"] == "done"
    assert job(container, "later")["status"] == "scheduled"
    clock.advance(timedelta(hours=1))
    assert drain(w) == 1
    assert drain(w) == 0
    assert rec.calls == [("now", 1), ("later", 1)]


def test_unregistered_kinds_wait_visibly(container: Container, registry: HandlerRegistry) -> None:
    put(container, "other", kind="send_sms")
    assert drain(worker(container, registry)) == 0
    assert job(container, "other")["status"] == "scheduled"


def test_failures_back_off_then_die_and_can_be_retried(
    container: Container, registry: HandlerRegistry, rec: Recorder, clock: VirtualClock
) -> None:
    rec.fail["k"] = RuntimeError("smtp down")
    put(container, "k")
    w = worker(container, registry)
    assert drain(w) == 1
    row = job(container, "k")
    assert (row["status"], row["attempts"], row["last_error"]) == (
        "failed",
        1,
        "RuntimeError: smtp down",
    )
    assert row["run_at"] == clock.now() + timedelta(seconds=10)
    assert drain(w) == 0  # not due yet
    clock.advance(timedelta(seconds=10))
    drain(w)
    assert job(container, "k")["run_at"] == clock.now() + timedelta(seconds=20)
    clock.advance(timedelta(seconds=20))
    drain(w)
    row = job(container, "k")
    assert (row["status"], row["attempts"]) == ("dead", 3)
    clock.advance(timedelta(days=1))
    assert drain(w) == 0

    del rec.fail["k"]
    manage.retry_job(container.db, row["id"], clock.now())
    assert drain(w) == 1
    assert (job(container, "k")["status"], job(container, "k")["attempts"]) == ("done", 1)
    with pytest.raises(Conflict, match="done"):
        manage.retry_job(container.db, row["id"], clock.now())
    with pytest.raises(NotFound):
        manage.retry_job(container.db, 999_999, clock.now())


def test_permanent_error_is_dead_at_once_and_retry_after_is_honoured(
    container: Container, registry: HandlerRegistry, rec: Recorder, clock: VirtualClock
) -> None:
    rec.fail["perm"] = ProviderError("bad address", permanent=True)
    rec.fail["slow"] = ProviderError("429", retry_after=900)
    put(container, "perm")
    put(container, "slow")
    drain(worker(container, registry))
    assert job(container, "perm")["status"] == "dead"
    assert job(container, "perm")["attempts"] == 1
    assert job(container, "slow")["status"] == "failed"
    assert job(container, "slow")["run_at"] == clock.now() + timedelta(seconds=900)


def test_a_rate_limit_wait_gives_the_job_back_without_using_an_attempt(
    container: Container, registry: HandlerRegistry, rec: Recorder, clock: VirtualClock
) -> None:
    """A campaign queued behind a 2/s provider limit waits its turn for as long as it takes:
    ten waits in a row, more than ``max_attempts``, and the job still runs, on attempt 1."""
    rec.fail["queued"] = RateLimited("email:resend: local rate limit", retry_after=30)
    put(container, "queued", max_attempts=3)
    w = worker(container, registry)
    for _ in range(10):
        drain(w)
        row = job(container, "queued")
        assert (row["status"], row["attempts"]) == ("scheduled", 0)
        assert row["run_at"] == clock.now() + timedelta(seconds=30)
        assert "local rate limit" in row["last_error"]
        clock.advance(timedelta(seconds=30))
    del rec.fail["queued"]
    drain(w)
    row = job(container, "queued")
    assert (row["status"], row["attempts"]) == ("done", 1)
    assert [a for key, a in rec.calls if key == "queued"] == [1] * 11


def test_per_job_max_attempts(
    container: Container, registry: HandlerRegistry, rec: Recorder
) -> None:
    rec.fail["once"] = RuntimeError("no")
    put(container, "once", max_attempts=1)
    drain(worker(container, registry))
    assert job(container, "once")["status"] == "dead"


def test_async_handlers_get_their_context(container: Container, clock: VirtualClock) -> None:
    seen: list[JobContext] = []
    registry = HandlerRegistry()

    @registry.handler("send_email")
    async def send(ctx: JobContext) -> None:
        seen.append(ctx)

    put(
        container,
        "seq:1:s1",
        kind="send_email",
        payload={"template": "t"},
        contact_id=3,
        enrollment_id=1,
    )
    drain(worker(container, registry))
    [ctx] = seen
    assert (ctx.kind, ctx.key, ctx.attempt, ctx.contact_id, ctx.enrollment_id) == (
        "send_email",
        "seq:1:s1",
        1,
        3,
        1,
    )
    assert ctx.payload == {"template": "t"}
    assert ctx.now == clock.now()


# -- cancel and reschedule ----------------------------------------------------------------------


def test_cancelled_jobs_never_run(
    container: Container, registry: HandlerRegistry, rec: Recorder, clock: VirtualClock
) -> None:
    put(container, "a", contact_id=1, enrollment_id=10)
    put(container, "b", contact_id=1, enrollment_id=11)
    put(container, "c", contact_id=2, kind="send_sms")
    put(container, "d", contact_id=2)
    with container.db.begin() as conn:
        assert cancel(conn, "a")
        assert not cancel(conn, "a")
        assert not cancel(conn, "missing")
        assert cancel_where(conn, enrollment_id=11) == 1
        assert cancel_where(conn, contact_id=2, kinds=["send_sms"]) == 1
        with pytest.raises(InvalidFields):
            cancel_where(conn)
    clock.advance(timedelta(days=1))
    drain(worker(container, registry))
    assert rec.calls == [("d", 1)]
    assert [job(container, k)["status"] for k in "abcd"] == [
        "cancelled",
        "cancelled",
        "cancelled",
        "done",
    ]


def test_reschedule_moves_a_waiting_job_only(
    container: Container, registry: HandlerRegistry, rec: Recorder, clock: VirtualClock
) -> None:
    put(container, "k", 60)
    with container.db.begin() as conn:
        assert reschedule(conn, "k", clock.now() + timedelta(hours=5))
        assert not reschedule(conn, "missing", clock.now())
    clock.advance(timedelta(hours=1))
    assert drain(worker(container, registry)) == 0
    with container.db.begin() as conn:
        assert reschedule(conn, "k", clock.now())
    assert drain(worker(container, registry)) == 1
    with container.db.begin() as conn:
        assert not reschedule(conn, "k", clock.now())


def test_cancel_during_a_run_lets_it_finish_but_stops_retries(
    container: Container, registry: HandlerRegistry, rec: Recorder
) -> None:
    put(container, "ok")
    put(container, "bad")
    rec.fail["bad"] = RuntimeError("transient")
    w = worker(container, registry)
    attempts, _ = w.claim(10)
    assert {a.ctx.key for a in attempts} == {"ok", "bad"}
    with container.db.begin() as conn:
        assert cancel(conn, "ok")
        assert cancel(conn, "bad")
        assert not reschedule(conn, "ok", container.clock.now())
    outcomes = [asyncio.run(w.execute(a)) for a in attempts]
    w.finish(outcomes)
    assert job(container, "ok")["status"] == "done"
    assert job(container, "bad")["status"] == "cancelled"


# -- leases ----------------------------------------------------------------------------------


def test_a_lost_worker_s_jobs_are_taken_again_and_its_late_finish_is_ignored(
    container: Container, registry: HandlerRegistry, rec: Recorder, clock: VirtualClock
) -> None:
    put(container, "k")
    dead = worker(container, registry, "dead")
    [attempt], _ = dead.claim(10)
    assert job(container, "k")["worker"] == "dead"
    alive = worker(container, registry, "alive")
    assert drain(alive) == 0  # leased
    clock.advance(timedelta(seconds=31))
    assert drain(alive) == 1
    row = job(container, "k")
    assert (row["status"], row["attempts"], row["worker"]) == ("done", 2, "alive")
    dead.finish([asyncio.run(dead.execute(attempt))])  # the old attempt reports in late
    assert job(container, "k")["worker"] == "alive"
    assert rec.calls == [("k", 2), ("k", 1)]


def test_a_job_that_keeps_losing_its_worker_goes_dead(
    container: Container, registry: HandlerRegistry, rec: Recorder, clock: VirtualClock
) -> None:
    put(container, "poison", max_attempts=2)
    for n in range(2):
        w = worker(container, registry, f"w{n}")
        assert len(w.claim(10)[0]) == 1
        clock.advance(timedelta(seconds=31))
    assert drain(worker(container, registry, "last")) == 0
    row = job(container, "poison")
    assert row["status"] == "dead"
    assert "lease expired" in row["last_error"]
    assert rec.calls == []


def test_heartbeat_keeps_the_lease_of_a_live_attempt(
    container: Container, registry: HandlerRegistry, clock: VirtualClock
) -> None:
    put(container, "long")
    w = worker(container, registry)
    [attempt], _ = w.claim(10)
    clock.advance(timedelta(seconds=25))
    w.extend_leases([(attempt.id, attempt.number)])
    clock.advance(timedelta(seconds=25))
    assert drain(worker(container, registry, "other")) == 0
    assert job(container, "long")["lease_until"] == clock.now() + timedelta(seconds=5)


# -- the loop --------------------------------------------------------------------------------


def test_loop_wakes_on_enqueue_and_drains_on_stop(
    make_settings: Callable[..., Settings],
) -> None:
    """An idle worker sleeping for a minute runs a job enqueued now (in-process signal on
    SQLite, NOTIFY on PostgreSQL); on stop it hands back an attempt past the grace period."""
    c = build_container(make_settings(), clock=SystemClock())
    ran = threading.Event()
    started = asyncio.Event()
    release = asyncio.Event()
    registry = HandlerRegistry()

    @registry.handler("quick")
    def quick(ctx: JobContext) -> None:
        ran.set()

    @registry.handler("stuck")
    async def stuck(ctx: JobContext) -> None:
        started.set()
        await release.wait()

    w = JobWorker(c, registry, max_idle_seconds=60, grace_seconds=0.2)

    async def scenario() -> None:
        stop = asyncio.Event()
        loop_task = asyncio.create_task(w.run(stop))
        await asyncio.sleep(0.3)  # let it go idle
        await asyncio.to_thread(put, c, "q", kind="quick")
        assert await asyncio.to_thread(ran.wait, 20), "worker was not woken by the enqueue"
        await asyncio.to_thread(put, c, "s", kind="stuck")
        # Wait for the handler itself: a stop landing between the claim's commit and the
        # handler's start hands the job back untouched instead (a different, also correct path).
        await asyncio.wait_for(started.wait(), 20)
        stop.set()
        await asyncio.wait_for(loop_task, 20)

    try:
        asyncio.run(scenario())
        assert job(c, "q")["status"] == "done"
        row = job(c, "s")
        assert (row["status"], row["attempts"]) == ("scheduled", 0)
        assert row["last_error"] == "released at shutdown before finishing"
    finally:
        c.close()


def test_busy_synchronous_handlers_do_not_starve_the_heartbeat(
    make_settings: Callable[..., Settings],
) -> None:
    """Synchronous handlers hold every thread of the default executor (two here); the
    worker's own claims, finishes and heartbeats still run, so live leases are renewed."""
    c = build_container(make_settings(), clock=SystemClock())
    release = threading.Event()
    started = threading.Semaphore(0)
    registry = HandlerRegistry()

    @registry.handler("busy")
    def busy(ctx: JobContext) -> None:
        started.release()
        while not release.wait(0.1):
            ctx.heartbeat()  # still making progress: the worker must keep the lease

    w = JobWorker(c, registry, lease_seconds=3, concurrency=4, grace_seconds=60)

    def leases() -> list[Any]:
        return [job(c, f"b{i}")["lease_until"] for i in range(2)]

    def renewed(before: list[Any]) -> bool:
        return all(b > a for a, b in zip(before, leases(), strict=True))

    async def scenario() -> None:
        asyncio.get_running_loop().set_default_executor(ThreadPoolExecutor(2))
        for i in range(2):
            put(c, f"b{i}", kind="busy")
        stop = asyncio.Event()
        task = asyncio.create_task(w.run(stop))
        try:
            # Only the event loop's thread from here: the default executor is about to be full.
            running = 0
            for _ in range(1200):
                if started.acquire(blocking=False):
                    running += 1
                    if running == 2:
                        break
                else:
                    await asyncio.sleep(0.05)
            assert running == 2, "the handlers never started"
            before = leases()
            for _ in range(1200):
                if renewed(before):
                    break
                await asyncio.sleep(0.05)
            assert renewed(before), "no lease was renewed while the handlers ran"
        finally:
            release.set()
            stop.set()
            await asyncio.wait_for(task, 60)

    try:
        asyncio.run(scenario())
        assert [job(c, f"b{i}")["status"] for i in range(2)] == ["done", "done"]
    finally:
        c.close()


# -- operator surfaces -------------------------------------------------------------------------


def test_admin_api_lists_retries_and_cancels(
    make_settings: Callable[..., Settings], clock: VirtualClock
) -> None:
    from starlette.testclient import TestClient

    from nurture.storage import api_keys
    from nurture.web.app import create_app

    c = build_container(make_settings(), clock=clock)
    with TestClient(create_app(c, access_log=False)) as client:
        with c.db.begin() as conn:
            api_keys.create(conn, "t", "nk_t", clock.now())
        auth = {"authorization": "Bearer nk_t"}
        registry = HandlerRegistry(default_retry=FAST)
        registry.register("work", Recorder(), max_attempts=1)
        put(c, "a")
        put(c, "b", 3600)
        rec_fail = registry.get("work")
        assert rec_fail is not None
        rec_fail.fn.fail["a"] = ProviderError("nope", permanent=True)  # type: ignore[union-attr]
        drain(worker(c, registry))

        assert client.get("/api/v1/jobs").status_code == 401
        page = client.get("/api/v1/jobs", headers=auth).json()
        assert [j["key"] for j in page["items"]] == ["b", "a"]
        dead = client.get("/api/v1/jobs?status=dead", headers=auth).json()["items"]
        assert [j["key"] for j in dead] == ["a"]
        assert client.get("/api/v1/jobs?status=bogus", headers=auth).status_code == 422

        a_id, b_id = dead[0]["id"], page["items"][0]["id"]
        r = client.post(f"/api/v1/jobs/{a_id}/retry", headers=auth)
        assert r.status_code == 200 and r.json()["status"] == "scheduled"
        assert client.post(f"/api/v1/jobs/{a_id}/retry", headers=auth).status_code == 409
        r = client.post(f"/api/v1/jobs/{b_id}/cancel", headers=auth)
        assert r.status_code == 200 and r.json()["status"] == "cancelled"
        assert client.post(f"/api/v1/jobs/{b_id}/cancel", headers=auth).status_code == 409
        assert client.post("/api/v1/jobs/999999/cancel", headers=auth).status_code == 404

        clock.advance(timedelta(minutes=2))
        metrics = client.get("/metrics")
        assert metrics.status_code == 200
        assert metrics.headers["content-type"].startswith("text/plain")
        body = metrics.text
        assert 'nurture_jobs{kind="work",status="scheduled"} 1.0' in body
        assert 'nurture_jobs{kind="work",status="cancelled"} 1.0' in body
        assert 'nurture_jobs_due{kind="work"} 1.0' in body
        assert 'nurture_jobs_lateness_seconds{kind="work"} 120.0' in body
    c.close()


def test_cli_lists_retries_and_cancels(
    container: Container,
    registry: HandlerRegistry,
    rec: Recorder,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from typer.testing import CliRunner

    from nurture.cli.main import app

    rec.fail["a"] = ProviderError("nope", permanent=True)
    put(container, "a")
    put(container, "b", 3600)
    drain(worker(container, registry))
    a_id, b_id = job(container, "a")["id"], job(container, "b")["id"]
    monkeypatch.setenv("NURTURE_DATABASE_URL", container.settings.database_url)
    runner = CliRunner()

    out = runner.invoke(app, ["jobs", "list", "--status", "dead"])
    assert out.exit_code == 0, out.output
    assert out.output.split()[:4] == [str(a_id), "dead", "work", "a"]
    assert "ProviderError: nope" in out.output
    assert runner.invoke(app, ["jobs", "list", "--status", "bogus"]).exit_code == 1

    out = runner.invoke(app, ["jobs", "retry", str(a_id)])
    assert out.exit_code == 0, out.output
    assert job(container, "a")["status"] == "scheduled"
    out = runner.invoke(app, ["jobs", "cancel", str(b_id)])
    assert out.exit_code == 0, out.output
    assert job(container, "b")["status"] == "cancelled"
    out = runner.invoke(app, ["jobs", "cancel", str(b_id)])
    assert out.exit_code == 1
    assert "cancelled" in out.output
