"""Delivery throughput: e-mails/s and CPU per e-mail through the real job worker, beside the
scheduler's own no-op drain measured in the same run, and worker memory over a long send.

    .venv/bin/python bench/delivery.py [--messages 3000] [--repeat 1] [--memory 100000]
                                       [--skip-pg] [--rows noop,recording,console,smtp,resend,pg]

Each row enqueues ``--messages`` ``send_email`` jobs (template ``thank_you``, one contact each)
and starts real worker processes together; each runs ``JobWorker.run`` with the real delivery
handler (batched: one read, one claim commit, one provider request per batch where the provider
has a batch API, one completion commit) until the queue is empty. Wall time is from the start
signal to the last worker's last completion; CPU is the workers' process CPU time (user +
system, all threads) divided by the e-mails, which moves much less than wall time on a shared
machine. Every row checks that each message was sent exactly once (``messages`` rows, and the
server's count for SMTP and Resend).

Rows:
- ``noop``: the same jobs with a handler that does nothing: the scheduler's own cost (baseline);
- ``recording``: the dry-run channel (no output): the cost of the send path itself;
- ``console``: one ``.eml`` file per message;
- ``smtp``: a local aiosmtpd server, over the pooled persistent connections;
- ``resend``: Resend's ``/emails/batch`` through ``nurture.testing.FakeResend`` served over real
  HTTP on 127.0.0.1 (``NURTURE_RESEND_API_URL``), the documented request checks included;
- ``pg``: the recording channel with two workers on PostgreSQL (``NURTURE_BENCH_PG_URL``,
  default postgresql://postgres@127.0.0.1:5432/test; a database created and dropped here).

Rate limits stay in the path (a token per provider request, from the shared bucket), raised out
of the way. ``--memory N`` then sends N e-mails through one recording worker on SQLite and
prints its RSS after the first tenth and at the end (flat = no per-e-mail growth).
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import os
import sys
import tempfile
import time
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller
from sqlalchemy import create_engine, func, select, text

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from nurture.bootstrap import build_container  # noqa: E402
from nurture.bootstrap.delivery import build_delivery, register  # noqa: E402
from nurture.clock import SystemClock  # noqa: E402
from nurture.config import Settings, normalise_database_url  # noqa: E402
from nurture.database import migrate  # noqa: E402
from nurture.database.engine import Database  # noqa: E402
from nurture.jobs import HandlerRegistry, JobContext, JobSpec, JobWorker, enqueue_many  # noqa: E402
from nurture.schema.tables import jobs, messages  # noqa: E402
from nurture.storage import contacts as contact_store  # noqa: E402
from nurture.testing import FakeResend, ProviderServer, free_port  # noqa: E402

ROWS = ("noop", "recording", "console", "smtp", "resend", "pg")
LABELS = {
    "noop": "scheduler, no-op handler (baseline)",
    "recording": "recording sink",
    "console": "console (.eml files)",
    "smtp": "smtp, local aiosmtpd, pooled",
    "resend": "resend /emails/batch (fake, real HTTP)",
    "pg": "recording sink",
}
TARGETS = {"recording": 1000.0, "smtp": 500.0, "resend": 1000.0, "pg": 1500.0}
UNFINISHED = ("scheduled", "running", "failed")
STOP_GRACE_SECONDS = 120
RESEND_ORIGIN = "https://api.resend.com"


class Sink:
    def __init__(self) -> None:
        self.count = 0

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.count += 1
        return "250 OK"


def rss_kb() -> int:
    status = Path("/proc/self/status").read_text()
    return next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS"))


def settings_for(url: str, row: str, smtp_port: int, resend_url: str, outbox: Path) -> Settings:
    provider = {"smtp": "smtp", "resend": "resend"}.get(row, "console")
    return Settings(
        database_url=url,
        email_provider=provider,  # type: ignore[arg-type]
        smtp_url=f"smtp://127.0.0.1:{smtp_port}",
        resend_api_key="re_test",
        resend_api_url=resend_url or "https://api.resend.com",
        outbox_dir=outbox,
        secret_key="bench-secret",
        dry_run=row in ("recording", "pg", "noop"),
        # Keep the shared bucket in the path (a token per provider request) but out of the way.
        email_rate_per_second=1_000_000,
        log_level="WARNING",
    )


def worker_process(
    url: str,
    row: str,
    smtp_port: int,
    resend_url: str,
    outbox: str,
    name: str,
    total: int,
    ready: Any,
    go: Any,
    results: Any,
) -> None:
    parent = os.getppid()
    settings = settings_for(url, row, smtp_port, resend_url, Path(outbox))
    container = build_container(settings)
    registry = HandlerRegistry()
    services = build_delivery(settings, container.db, container.clock)
    if row == "noop":

        async def noop(ctx: JobContext) -> None:
            return None

        registry.register("send_email", noop)
    else:
        register(registry, services)
    worker = JobWorker(container, registry, worker_id=name)
    samples: list[tuple[int, int]] = []  # (e-mails done, RSS kB)

    def progress() -> tuple[bool, int]:
        with container.db.read() as conn:
            pending = conn.execute(
                select(func.count())
                .select_from(jobs)
                .where(jobs.c.kind == "send_email", jobs.c.status.in_(UNFINISHED))
            ).scalar_one()
        return pending > 0, total - int(pending)

    async def main() -> tuple[float, float]:
        stop = asyncio.Event()

        async def until_empty() -> None:
            # Also stop when the bench itself is gone: an orphan would take the next runs' jobs.
            while os.getppid() == parent:
                busy, done = await asyncio.to_thread(progress)
                samples.append((done, rss_kb()))
                if not busy:
                    break
                await asyncio.sleep(0.25)
            stop.set()

        async def stuck() -> None:
            await stop.wait()
            await asyncio.sleep(STOP_GRACE_SECONDS)
            print(f"{name}: still running {STOP_GRACE_SECONDS}s after stop:", file=sys.stderr)
            for task in asyncio.all_tasks():
                task.print_stack(file=sys.stderr)
            sys.stderr.flush()
            os._exit(3)

        cpu = time.process_time()
        watcher = asyncio.create_task(until_empty())
        guard = asyncio.create_task(stuck())
        await worker.run(stop)
        finished = time.time()
        cpu = time.process_time() - cpu
        guard.cancel()
        await watcher
        await services.aclose()
        return finished, cpu

    ready.set()
    go.wait()
    try:
        finished, cpu = asyncio.run(main())
        results.put((name, finished, cpu, samples))
    finally:
        container.close()


class Run:
    def __init__(self, rate: float, cpu_ms: float, samples: list[tuple[int, int]]) -> None:
        self.rate, self.cpu_ms, self.samples = rate, cpu_ms, samples


def run_workers(
    workers: int, args_for: Any, *, timeout: float
) -> tuple[float, list[tuple[str, float, float, list[tuple[int, int]]]]]:
    """Start ``workers`` ``worker_process`` processes (``args_for(w)``: their arguments before
    the start signal's), release them together once all are ready, and wait for each one's
    ``(name, finished, cpu, samples)``. Returns the release time and the answers."""
    ctx = mp.get_context("spawn")
    go, results = ctx.Event(), ctx.Queue()
    procs, readies = [], []
    for w in range(workers):
        ready = ctx.Event()
        proc = ctx.Process(
            daemon=True, target=worker_process, args=(*args_for(w), ready, go, results)
        )
        proc.start()
        procs.append(proc)
        readies.append(ready)
    for ready in readies:
        ready.wait(120)
    started = time.time()
    go.set()
    answers = [results.get(timeout=timeout) for _ in procs]
    for proc in procs:
        proc.join(60)
    return started, answers


def one_run(
    db: Database,
    url: str,
    row: str,
    workers: int,
    contact_ids: list[int],
    tag: str,
    smtp_port: int,
    resend_url: str,
    outbox: Path,
) -> Run:
    now = SystemClock().now()
    specs = [
        JobSpec(
            kind="send_email",
            key=f"bench:{tag}:{i}",
            run_at=now - timedelta(seconds=1),
            payload={
                "template": "thank_you",
                "contact_id": cid,
                "event_id": None,
                "rule_id": None,
                "enrollment_id": None,
                "step_id": None,
                "transactional": False,
                "vars": {},
            },
            contact_id=cid,
        )
        for i, cid in enumerate(contact_ids)
    ]
    for start in range(0, len(specs), 10_000):
        with db.begin() as conn:
            enqueue_many(conn, specs[start : start + 10_000], now=now)
    started, answers = run_workers(
        workers,
        lambda w: (url, row, smtp_port, resend_url, str(outbox), f"{tag}-w{w}", len(contact_ids)),
        timeout=3600,
    )
    if row != "noop":
        with db.read() as conn:
            sent = conn.execute(
                select(func.count())
                .select_from(messages)
                .where(messages.c.key.like(f"bench:{tag}:%"), messages.c.status == "sent")
            ).scalar_one()
        if sent != len(contact_ids):
            raise SystemExit(f"{tag}: {sent} sent for {len(contact_ids)} jobs")
    wall = max(a[1] for a in answers) - started
    cpu = sum(a[2] for a in answers)
    return Run(len(contact_ids) / wall, cpu / len(contact_ids) * 1000, answers[0][3])


def new_contacts(db: Database, n: int) -> list[int]:
    now = SystemClock().now()
    stamp = time.time_ns()
    ids: list[int] = []
    for start in range(0, n, 5000):
        with db.begin() as conn:
            states = contact_store.create_many(
                conn, [f"c{i}-{stamp}@example.com" for i in range(start, min(n, start + 5000))], now
            )
            for s in states:
                s.first_name = "Ann"
            contact_store.save_many(conn, states, now)
        ids.extend(s.id for s in states)
    return ids


def measure(
    url: str, rows: list[str], workers: int, n: int, repeat: int, resend: ProviderServer
) -> dict[str, Run]:
    tmp = Path(tempfile.mkdtemp(prefix="nurture-bench-"))
    db = Database(url)
    migrate.upgrade(db)
    ids = new_contacts(db, n)
    sink = Sink()
    port = free_port()
    controller = Controller(sink, hostname="127.0.0.1", port=port)
    controller.start()
    out: dict[str, Run] = {}
    try:
        for row in rows:
            best: Run | None = None
            for rep in range(repeat):
                tag = f"{row}-{workers}-{rep}-{time.time_ns()}"
                smtp_before, resend_before = sink.count, resend.accepted()
                run = one_run(db, url, row, workers, ids, tag, port, resend.url, tmp / f"out-{tag}")
                if row == "smtp" and sink.count - smtp_before != n:
                    raise SystemExit(f"{tag}: the SMTP server got {sink.count - smtp_before}")
                if row == "resend" and resend.accepted() - resend_before != n:
                    raise SystemExit(f"{tag}: Resend got {resend.accepted() - resend_before}")
                if best is None or run.rate > best.rate:
                    best = run
            assert best is not None
            out[row] = best
    finally:
        controller.stop()
        db.dispose()
    return out


def with_pg_database(fn: Any) -> Any:
    base = normalise_database_url(
        os.environ.get("NURTURE_BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")
    )
    name = f"nurture_bench_{uuid.uuid4().hex[:8]}"
    admin = create_engine(base, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        return fn(base.rsplit("/", 1)[0] + "/" + name)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--messages", type=int, default=3000)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--memory", type=int, default=100_000, help="0: skip the memory run")
    parser.add_argument("--rows", default=",".join(ROWS))
    parser.add_argument("--skip-pg", action="store_true")
    args = parser.parse_args()
    wanted = [r for r in args.rows.split(",") if r]
    load = os.getloadavg()
    table: list[tuple[str, str, int, Run | None]] = []
    # Resend's documented API behind a real socket; requests are forgotten once answered, so
    # memory stays flat over long runs.
    with ProviderServer(FakeResend(), RESEND_ORIGIN, keep_requests=False) as resend:
        sqlite_rows = [r for r in wanted if r != "pg"]
        url = f"sqlite:///{tempfile.mkdtemp(prefix='nurture-bench-')}/bench.db"
        found = measure(url, sqlite_rows, 1, args.messages, args.repeat, resend)
        table += [("sqlite", r, 1, found[r]) for r in sqlite_rows]
        if "pg" in wanted and not args.skip_pg:
            pg = with_pg_database(
                lambda u: measure(u, ["noop", "pg"], 2, args.messages, args.repeat, resend)
            )
            table += [("postgresql", "noop", 2, pg["noop"]), ("postgresql", "pg", 2, pg["pg"])]
        memory = None
        if args.memory:
            url = f"sqlite:///{tempfile.mkdtemp(prefix='nurture-bench-')}/memory.db"
            memory = measure(url, ["recording"], 1, args.memory, 1, resend)["recording"]

    print(
        f"\n{args.messages} e-mails per row, best of {args.repeat}; load average before the run "
        f"{load[0]:.1f} on {os.cpu_count()} cores (a shared machine: wall figures move with it, "
        "CPU per e-mail much less)"
    )
    header = (
        f"{'database':<11}{'row':<40}{'workers':>8}{'e-mails/s':>11}{'x baseline':>11}"
        f"{'target':>8}{'x target':>9}{'CPU ms/e-mail':>14}"
    )
    print(header)
    print("-" * len(header))
    baselines = {db: run.rate for db, row, _, run in table if row == "noop" and run is not None}
    for database, row, workers, run in table:
        if run is None:
            continue
        base = baselines.get(database)
        ratio = f"{run.rate / base:.2f}" if base and row != "noop" else ""
        target = TARGETS.get(row)
        print(
            f"{database:<11}{LABELS[row]:<40}{workers:>8}{run.rate:>11.0f}{ratio:>11}"
            f"{(f'{target:.0f}' if target else ''):>8}"
            f"{(f'{run.rate / target:.2f}' if target else ''):>9}{run.cpu_ms:>14.3f}"
        )
    if memory is not None:
        samples = [s for s in memory.samples if s[0] > 0]
        tenth = next((s for s in samples if s[0] >= args.memory // 10), samples[0])
        last = samples[-1]
        print(
            f"\nworker memory over {args.memory:,} e-mails (recording sink, SQLite, "
            f"{memory.rate:.0f} e-mails/s, {memory.cpu_ms:.3f} CPU ms/e-mail): "
            f"RSS {tenth[1] / 1024:.1f} MiB after {tenth[0]:,}, {last[1] / 1024:.1f} MiB after "
            f"{last[0]:,} ({(last[1] - tenth[1]) / 1024:+.1f} MiB)"
        )


if __name__ == "__main__":
    main()
