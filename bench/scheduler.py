"""Job scheduler benchmark: enqueue, drain, lateness, claim cost against the backlog, memory.

    .venv/bin/python bench/scheduler.py [--skip-pg] [--skip-sqlite] [--pending 1000000] [--repeat 3]

SQLite runs in a temporary file; PostgreSQL on NURTURE_BENCH_PG_URL (default
postgresql://postgres@127.0.0.1:5432/test), in a database this script creates and drops.
Handlers are no-ops, so the numbers are the scheduler's own cost. Worker processes are real
``JobWorker`` loops (``--worker`` mode below), measured from the database's timestamps.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import create_engine, text

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from nurture.bootstrap import build_container  # noqa: E402
from nurture.config import Settings, normalise_database_url  # noqa: E402
from nurture.database import migrate  # noqa: E402
from nurture.database.engine import Database  # noqa: E402
from nurture.jobs import (  # noqa: E402
    HandlerRegistry,
    JobContext,
    JobSpec,
    JobWorker,
    enqueue,
    enqueue_many,
)
from nurture.runtime import install_stop_signals  # noqa: E402
from nurture.storage import jobs as store  # noqa: E402

ENQUEUE_TIMERS = 100_000
DRAIN_JOBS = 20_000
BATCH = 100
LATENESS_RATE = 500
LATENESS_SECONDS = 10


async def noop(ctx: JobContext) -> None:
    return None


def now() -> datetime:
    return datetime.now(UTC)


# -- worker process ----------------------------------------------------------------------------


def produce(db: Database, rate: int, seconds: float) -> None:
    """Enqueue one due-now job per transaction at a steady rate (as webhooks would)."""
    interval = 1.0 / rate
    start = time.monotonic()
    for i in range(int(rate * seconds)):
        target = start + i * interval
        pause = target - time.monotonic()
        if pause > 0:
            time.sleep(pause)
        stamp = now()
        with db.begin() as conn:
            enqueue(
                conn,
                kind="noop",
                key=f"late-{uuid.uuid4().hex}",
                run_at=stamp,
                payload={},
                now=stamp,
            )


async def worker_main(url: str, rate: int, seconds: float) -> None:
    settings = Settings(database_url=url, job_batch_size=BATCH, job_concurrency=200)
    container = build_container(settings)
    registry = HandlerRegistry()
    registry.register("noop", noop)
    stop = asyncio.Event()
    install_stop_signals(stop)
    worker = JobWorker(container, registry)
    if rate:
        threading.Thread(target=produce, args=(container.db, rate, seconds), daemon=True).start()
    print("ready", flush=True)
    await worker.run(stop)
    container.close()


# -- measurements --------------------------------------------------------------------------------


class Bench:
    def __init__(self, name: str, url: str) -> None:
        self.name, self.url = name, url
        self.db = Database(url)
        migrate.upgrade(self.db)
        self.rows: list[tuple[str, str]] = []

    def clear(self) -> None:
        with self.db.begin() as conn:
            conn.execute(text("DELETE FROM jobs"))

    def record(self, what: str, value: str) -> None:
        self.rows.append((what, value))
        print(f"  {self.name:<10} {what:<52} {value}", flush=True)

    def workers(
        self, count: int, rate: int = 0, seconds: float = 0
    ) -> list[subprocess.Popen[bytes]]:
        procs = []
        for i in range(count):
            args = [sys.executable, __file__, "--worker", self.url]
            if rate and i == 0:
                args += ["--produce", str(rate), "--seconds", str(seconds)]
            procs.append(subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL))
        for p in procs:
            assert p.stdout is not None
            p.stdout.readline()  # "ready"
        return procs

    @staticmethod
    def stop(procs: list[subprocess.Popen[bytes]]) -> None:
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            p.wait(timeout=60)

    def count(self, where: str) -> int:
        with self.db.read() as conn:
            return int(conn.execute(text(f"SELECT count(*) FROM jobs WHERE {where}")).scalar_one())

    def enqueue_rate(self, repeat: int) -> None:
        """Timers 1 minute to 30 days ahead, one transaction per batch (as a campaign would)."""
        rates = []
        for _ in range(repeat):
            self.clear()
            base = now()
            rng = random.Random(1)
            start = time.perf_counter()
            for b in range(0, ENQUEUE_TIMERS, BATCH):
                specs = [
                    JobSpec(
                        "noop", f"t{i}", base + timedelta(seconds=rng.uniform(60, 30 * 86400)), {}
                    )
                    for i in range(b, b + BATCH)
                ]
                with self.db.begin() as conn:
                    enqueue_many(conn, specs, now=base)
            rates.append(ENQUEUE_TIMERS / (time.perf_counter() - start))
        spread = f" (runs {min(rates):,.0f}-{max(rates):,.0f})" if repeat > 1 else ""
        self.record(
            f"enqueue {ENQUEUE_TIMERS:,} timers, batches of {BATCH}",
            f"{max(rates):,.0f} /s{spread}",
        )

    def drain_rate(self, processes: int) -> None:
        self.clear()
        stamp = now()
        with self.db.begin() as conn:
            for b in range(0, DRAIN_JOBS, 1000):
                enqueue_many(
                    conn,
                    [JobSpec("noop", f"d{i}", stamp, {}) for i in range(b, b + 1000)],
                    now=stamp,
                )
        procs = self.workers(processes)
        try:
            while self.count("status <> 'done'"):
                time.sleep(0.2)
        finally:
            self.stop(procs)
        with self.db.read() as conn:
            first, last = conn.execute(
                text("SELECT min(updated_at), max(updated_at) FROM jobs")
            ).one()
        span = _seconds(last) - _seconds(first)
        self.record(
            f"drain {DRAIN_JOBS:,} due no-op jobs, {processes} worker process(es)",
            f"{DRAIN_JOBS / span:,.0f} /s",
        )

    def lateness(self, processes: int) -> None:
        self.clear()
        in_process = self.db.is_sqlite  # SQLite's wake-up is in-process, as in `nurture up`
        procs = self.workers(processes, LATENESS_RATE if in_process else 0, LATENESS_SECONDS)
        try:
            if not in_process:
                produce(self.db, LATENESS_RATE, LATENESS_SECONDS)
            else:
                time.sleep(LATENESS_SECONDS)
            expected = int(LATENESS_RATE * LATENESS_SECONDS)
            while self.count("status = 'done'") < expected:
                time.sleep(0.2)
        finally:
            self.stop(procs)
        with self.db.read() as conn:
            rows = conn.execute(text("SELECT run_at, updated_at FROM jobs")).all()
        late = sorted(_seconds(done) - _seconds(run_at) for run_at, done in rows)
        p50 = statistics.median(late)
        p99 = late[int(len(late) * 0.99) - 1]
        where = "producer in the worker process" if in_process else "producer in another process"
        self.record(
            f"lateness at {LATENESS_RATE}/s, {processes} worker(s) ({where})",
            f"p50 {p50 * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms",
        )

    def fill_future(self, total: int) -> None:
        """Top the table up to ``total`` future timers with one INSERT ... SELECT."""
        have = self.count("status = 'scheduled' AND kind = 'noop' AND key LIKE 'f%'")
        if have >= total:
            return
        future = (now() + timedelta(days=30)).strftime("%Y-%m-%d %H:%M:%S")
        if self.db.is_sqlite:
            sql = f"""
                WITH RECURSIVE n(i) AS
                    (SELECT {have} UNION ALL SELECT i + 1 FROM n WHERE i + 1 < {total})
                INSERT INTO jobs
                    (kind, key, status, run_at, attempts, payload, created_at, updated_at)
                SELECT 'noop', 'f' || i, 'scheduled',
                       datetime('{future}', '+' || (i % 86400) || ' seconds'), 0, '{{}}',
                       '{future}', '{future}' FROM n"""
        else:
            sql = f"""
                INSERT INTO jobs
                    (kind, key, status, run_at, attempts, payload, created_at, updated_at)
                SELECT 'noop', 'f' || i, 'scheduled',
                       timestamptz '{future}+00' + make_interval(secs => i % 86400), 0, '{{}}',
                       now(), now()
                FROM generate_series({have}, {total - 1}) AS i"""
        with self.db.begin() as conn:
            conn.execute(text(sql))
        if not self.db.is_sqlite:
            with self.db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
                conn.execute(text("VACUUM ANALYZE jobs"))

    def claim_time(self, pending: int) -> float:
        """Median time of one claim of 100 due jobs, with ``pending`` future timers behind them."""
        self.fill_future(pending)
        stamp = now()
        with self.db.begin() as conn:
            conn.execute(text("DELETE FROM jobs WHERE key LIKE 'c%'"))
            enqueue_many(
                conn, [JobSpec("noop", f"c{i}", stamp, {}) for i in range(1000)], now=stamp
            )
        samples = []
        for _ in range(30):
            conn_ctx = self.db.engine.connect()
            with conn_ctx as conn:
                trans = conn.begin()
                start = time.perf_counter()
                got = store.claim(
                    conn,
                    kinds=["noop"],
                    now=now(),
                    lease_until=now() + timedelta(minutes=1),
                    worker="bench",
                    limit=BATCH,
                )
                samples.append(time.perf_counter() - start)
                trans.rollback()
            assert len(got) == BATCH
        return statistics.median(samples)

    def idle_rss_mb(self) -> float:
        procs = self.workers(1)
        try:
            time.sleep(3)
            status = Path(f"/proc/{procs[0].pid}/status").read_text()
        finally:
            self.stop(procs)
        kb = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS"))
        return kb / 1024

    def backlog(self, big: int) -> None:
        self.clear()
        small_t = self.claim_time(10_000)
        small_rss = self.idle_rss_mb()
        big_t = self.claim_time(big)
        big_rss = self.idle_rss_mb()
        self.record(
            f"claim 100 due jobs, 10,000 vs {big:,} pending timers",
            f"{small_t * 1000:.2f} ms vs {big_t * 1000:.2f} ms",
        )
        self.record(
            f"worker RSS, 10,000 vs {big:,} pending timers",
            f"{small_rss:.0f} MB vs {big_rss:.0f} MB",
        )

    def run(self, pending: int, repeat: int) -> None:
        self.enqueue_rate(repeat)
        for n in (1, 2):
            self.drain_rate(n)
        for n in (1, 2):
            self.lateness(n)
        self.backlog(pending)
        self.db.dispose()


def _seconds(value: object) -> float:
    if isinstance(value, str):  # SQLite aggregate over the raw column
        value = datetime.fromisoformat(value).replace(tzinfo=UTC)
    assert isinstance(value, datetime)
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.timestamp()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--worker", metavar="URL")
    parser.add_argument("--produce", type=int, default=0)
    parser.add_argument("--seconds", type=float, default=0)
    parser.add_argument("--skip-pg", action="store_true")
    parser.add_argument("--skip-sqlite", action="store_true")
    parser.add_argument("--pending", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3, help="enqueue runs (best is shown)")
    args = parser.parse_args()
    if args.worker:
        asyncio.run(worker_main(args.worker, args.produce, args.seconds))
        return

    results: list[tuple[str, list[tuple[str, str]]]] = []
    if not args.skip_sqlite:
        with tempfile.TemporaryDirectory() as tmp:
            bench = Bench("sqlite", f"sqlite:///{tmp}/bench.db")
            bench.run(args.pending, args.repeat)
            results.append(("sqlite", bench.rows))
    if not args.skip_pg:
        base = normalise_database_url(
            os.environ.get("NURTURE_BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")
        )
        name = f"nurture_bench_{uuid.uuid4().hex[:8]}"
        admin = create_engine(base, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        try:
            bench = Bench("postgresql", base.rsplit("/", 1)[0] + "/" + name)
            bench.run(args.pending, args.repeat)
            results.append(("postgresql", bench.rows))
        finally:
            with admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            admin.dispose()

    print()
    print(f"| {'measure':<60} | {'backend':<10} | {'result':<28} |")
    print(f"|{'-' * 62}|{'-' * 12}|{'-' * 30}|")
    for backend, rows in results:
        for what, value in rows:
            print(f"| {what:<60} | {backend:<10} | {value:<28} |")


if __name__ == "__main__":
    main()
