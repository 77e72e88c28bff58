"""Retention benchmark: ingest and process a long stream with pruning on, and the same stream
with pruning off, on SQLite; print size and rates every ``--report-every`` events.

    .venv/bin/python bench/retention.py [--events 1000000] [--baseline-events N]
        [--contacts 20000] [--days 100] [--retention-days 3] [--only pruned|baseline]

Everything runs as ``nurture up`` runs it, in one process: the real ``Ingestor`` (group commit
from an event loop: waves of concurrent single-event submissions, each with its own ~800-byte
JSON body, as webhooks arrive; HTTP is left out), the real ``EventProcessor`` with the default
pack in its own thread, and the real ``JobWorker`` with every handler (deliveries through the
recording channels, ``NURTURE_DRY_RUN``), including the recurring ``retention_prune`` job.

The clock is virtual: the stream spans ``--days`` days (1,000,000 events over 100 days is
10,000 a day), advanced as events are ingested, so with ``--retention-days 3`` and the pass
every virtual day, pruning happens about a hundred times during the run, each time on the
~10,000 events that just left the window. Ingest stays at most ``--backlog`` events ahead of
processing (a real sender is not infinitely faster than the worker).

Columns: events ingested so far; the database's size (pages in use; the file is that plus the WAL)
and its free pages; MB per 100k events over the last window; ingest rate (events/s while
submitting; the wait for the processor to catch up is left out); processing rate (events/s of wall
time in the window); rows pruned by the passes that ended in the window (raw cleared, jobs,
deliveries, timeline trimmed, events deleted, timeline deleted, ledger rows summed: every window
is ``--retention-days``; a pass that spans windows counts in the one it ends in); the longest write
transaction of a pruning pass (and of its incremental-vacuum steps); the longest processing batch
(also one write transaction, for comparison); the slowest ingest group commit (what a webhook
request waited at worst, the wait for the writer included); CPU seconds of the whole process in the
window. The machine may be shared: compare the two runs' columns, not the absolute figures.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import random
import resource
import shutil
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from nurture.bootstrap import build_container, build_job_worker, build_processor  # noqa: E402
from nurture.clock import VirtualClock  # noqa: E402
from nurture.config import Settings  # noqa: E402
from nurture.core.events import ContactRef, InboundEvent  # noqa: E402
from nurture.database import migrate  # noqa: E402
from nurture.database.engine import Database  # noqa: E402
from nurture.errors import StorageUnavailable  # noqa: E402
from nurture.intake.ingest import Ingestor  # noqa: E402
from nurture.retention import prune as retention  # noqa: E402

START = datetime(2026, 1, 5, 0, 0, tzinfo=UTC)
# What a pass logs per table (``PruneReport.counts``).
PRUNED_KEYS = (
    "events", "jobs", "deliveries", "timeline",
    "events_deleted", "timeline_deleted", "score_ledger_folded", "events_released",
)  # fmt: skip
WAVE = 200  # concurrent submissions per wave: one or two group commits
MIX = [
    ("page.viewed", 50),
    ("email.opened", 25),
    ("email.clicked", 12),
    ("email.delivered", 12),
    ("purchase.completed", 1),
]
USER_AGENT = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120"


def event(rng: random.Random, n: int, contacts: int, at: datetime) -> tuple[InboundEvent, bytes]:
    kind = rng.choices([k for k, _ in MIX], [w for _, w in MIX])[0]
    email = f"c{rng.randrange(contacts)}@example.com"
    data: dict[str, Any] = {"campaign": f"cmp-{n % 37}"}
    if kind == "page.viewed":
        data["url"] = f"https://shop.example.com/p/{n % 997}"
    elif kind == "email.clicked":
        data["link"] = f"https://shop.example.com/l/{n % 101}"
    elif kind == "purchase.completed":
        data.update(order_id=f"o{n}", amount=round(20 + rng.random() * 200, 2), currency="EUR")
    # What a provider sends carries more than the canonical event keeps.
    body = {
        "event": kind,
        "id": f"evt_{n:09d}",
        "email": email,
        "date": at.isoformat(),
        "ts_epoch": int(at.timestamp() * 1000),
        "data": data,
        "message_id": f"<{n:012d}.{rng.getrandbits(48):x}@relay.example.com>",
        "tags": ["newsletter", "weekly", f"segment-{n % 7}"],
        "sending_ip": f"185.41.{n % 250}.{n % 200}",
        "user_agent": USER_AGENT,
        "template_id": n % 40,
        "subject": "Your weekly selection: new arrivals and the best of the season",
        "headers": {"X-Mailin-custom": f"contact:{email}|campaign:{n % 37}", "X-Mailer": "b"},
    }
    raw = orjson.dumps(body)
    inbound = InboundEvent(
        source="bench", type=kind, dedupe_key=f"evt_{n:09d}",
        contact=ContactRef(email=email), data=data, occurred_at=at,
    )  # fmt: skip
    return inbound, raw


class PassLog(logging.Handler):
    """Collects what each ``retention_prune`` pass logged."""

    def __init__(self) -> None:
        super().__init__()
        self.passes: list[dict[str, Any]] = []

    def emit(self, record: logging.LogRecord) -> None:
        if getattr(record, "action", None) == "retention.prune":
            self.passes.append(dict(record.__dict__))


@dataclass
class Window:
    events: int
    db_mb: float
    free_mb: float
    mb_per_100k: float
    ingest_rate: float
    process_rate: float
    pruned: int
    longest_prune_ms: float
    longest_vacuum_ms: float
    longest_batch_ms: float
    slowest_commit_ms: float
    cpu_s: float
    wall_s: float


@dataclass
class Counters:
    processed: int = 0
    commit_max: float = 0.0
    batch_max: float = 0.0
    lock: threading.Lock = field(default_factory=threading.Lock)


class TimedIngestor(Ingestor):
    """The real ingestor; records its slowest group commit (the writer's wait included)."""

    counters: Counters

    def _commit(self, group: Any) -> Any:
        started = time.perf_counter()
        try:
            return super()._commit(group)
        finally:
            took = time.perf_counter() - started
            with self.counters.lock:
                self.counters.commit_max = max(self.counters.commit_max, took)


def db_size(db: Database) -> tuple[float, float]:
    with db.read() as conn:
        page = conn.exec_driver_sql("PRAGMA page_size").scalar_one()
        pages = conn.exec_driver_sql("PRAGMA page_count").scalar_one()
        free = conn.exec_driver_sql("PRAGMA freelist_count").scalar_one()
    return (pages - free) * page / 1e6, free * page / 1e6


def table_sizes(db: Database) -> dict[str, float]:
    with db.read() as conn:
        rows = conn.exec_driver_sql(
            "SELECT coalesce(m.tbl_name, s.name), sum(s.pgsize) FROM dbstat s "
            "LEFT JOIN sqlite_master m ON m.name = s.name GROUP BY 1 ORDER BY 2 DESC"
        ).all()
    return {str(name): size / 1e6 for name, size in rows}


def run(args: argparse.Namespace, events: int, pruning: bool, workdir: Path) -> dict[str, Any]:
    path = workdir / ("pruned.db" if pruning else "baseline.db")
    days = args.retention_days if pruning else 0
    settings = Settings(
        database_url=f"sqlite:///{path}",
        dry_run=True,
        outbox_dir=workdir / "outbox",
        retention_raw_days=days,
        retention_job_days=days,
        retention_delivery_days=days,
        retention_timeline_days=days,
        retention_history_days=days,
        retention_interval_minutes=24 * 60,
        job_max_idle_seconds=0.2,
        # Leases are virtual time too, and a wave moves the clock by half an hour: a real
        # minute's lease would expire under every running job.
        job_lease_seconds=30 * 86_400,
    )
    logging.getLogger("nurture").setLevel(logging.CRITICAL)  # a busy writer logs every retry
    clock = VirtualClock(START)
    container = build_container(settings, clock=clock)
    migrate.upgrade(container.db)
    processor = build_processor(container)
    ingestor = TimedIngestor(container.db, clock, partitions=settings.partitions)
    counters = Counters()
    ingestor.counters = counters
    passes = PassLog()
    logging.getLogger("nurture.retention").addHandler(passes)
    logging.getLogger("nurture.retention").setLevel(logging.INFO)
    step = timedelta(days=args.days) / args.events_for_clock
    stop = threading.Event()

    def process() -> None:
        while True:
            started = time.perf_counter()
            try:
                result = processor.run_once()  # one write transaction (two if an event failed)
            except StorageUnavailable:  # the writer stayed busy past the timeout: as the worker
                time.sleep(0.5)  # loop of ``nurture up`` does, try again
                continue
            took = time.perf_counter() - started
            with counters.lock:
                counters.processed += result.total
                counters.batch_max = max(counters.batch_max, took)
            if result.total == 0:
                if stop.is_set():
                    return
                time.sleep(0.005)

    rows: list[Window] = []
    refused = 0

    async def deliver(e: InboundEvent, raw: bytes) -> None:
        """As a sender does with a 503: wait and send again."""
        nonlocal refused
        while True:
            try:
                await ingestor.submit([e], raw, "application/json")
                return
            except StorageUnavailable:
                refused += 1
                await asyncio.sleep(1)

    async def main() -> None:
        halt = asyncio.Event()
        worker = build_job_worker(container)
        loops = [
            asyncio.create_task(worker.run(halt)),
            asyncio.create_task(retention.schedule_loop(container.db, clock, settings)(halt)),
        ]
        processing = threading.Thread(target=process, name="processor")
        processing.start()
        rng = random.Random(7)
        sent = 0
        submit_time = 0.0
        window_start = time.perf_counter()
        cpu_start = time.process_time()
        submit_at_window = 0.0
        processed_at_window = 0
        size_at_window = db_size(container.db)[0]
        passes_at_window = 0
        while sent < events:
            while sent - counters.processed > args.backlog:
                await asyncio.sleep(0.01)
            wave = min(WAVE, events - sent)
            batch = [event(rng, sent + i, args.contacts, clock.now()) for i in range(wave)]
            started = time.perf_counter()
            await asyncio.gather(*(deliver(e, raw) for e, raw in batch))
            submit_time += time.perf_counter() - started
            sent += wave
            clock.advance(step * wave)
            if sent % args.report_every == 0 or sent == events:
                if sent == events:  # let the processor finish the stream
                    while counters.processed < sent:
                        await asyncio.sleep(0.05)
                now = time.perf_counter()
                wall = now - window_start
                size, free = db_size(container.db)
                new_passes = passes.passes[passes_at_window:]
                pruned = sum(int(p.get(k, 0)) for p in new_passes for k in PRUNED_KEYS)
                with counters.lock:
                    processed = counters.processed
                    slowest, counters.commit_max = counters.commit_max, 0.0
                    batch_max, counters.batch_max = counters.batch_max, 0.0
                window_events = sent - (rows[-1].events if rows else 0)
                rows.append(
                    Window(
                        events=sent,
                        db_mb=size,
                        free_mb=free,
                        mb_per_100k=(size - size_at_window) / window_events * 100_000,
                        ingest_rate=window_events / max(submit_time - submit_at_window, 1e-9),
                        process_rate=(processed - processed_at_window) / wall,
                        pruned=pruned,
                        longest_prune_ms=max(
                            (float(p.get("longest_write_ms", 0)) for p in new_passes), default=0
                        ),
                        longest_vacuum_ms=max(
                            (float(p.get("longest_vacuum_ms", 0)) for p in new_passes), default=0
                        ),
                        longest_batch_ms=batch_max * 1000,
                        slowest_commit_ms=slowest * 1000,
                        cpu_s=time.process_time() - cpu_start,
                        wall_s=wall,
                    )
                )
                print_row("pruned" if pruning else "baseline", rows[-1])
                window_start, cpu_start = now, time.process_time()
                submit_at_window, processed_at_window = submit_time, processed
                size_at_window, passes_at_window = size, len(passes.passes)
        stop.set()
        await asyncio.to_thread(processing.join)
        halt.set()
        await asyncio.gather(*loops)

    asyncio.run(main())
    ingestor.close()
    sizes = table_sizes(container.db)
    container.close()
    logging.getLogger("nurture.retention").removeHandler(passes)
    print(f"{'pruned' if pruning else 'baseline'}: {refused} submissions refused (503) and resent")
    return {"rows": rows, "sizes": sizes, "passes": len(passes.passes), "file": path}


def print_row(label: str, w: Window) -> None:
    print(
        f"{label:8} {w.events:>9,} ev  db {w.db_mb:8.1f} MB (+{w.free_mb:.1f} free)  "
        f"{w.mb_per_100k:6.1f} MB/100k  ingest {w.ingest_rate:7,.0f}/s  "
        f"process {w.process_rate:6,.0f}/s  pruned {w.pruned:8,}  "
        f"prune tx max {w.longest_prune_ms:6.1f} ms (vacuum {w.longest_vacuum_ms:5.1f})  "
        f"process tx max {w.longest_batch_ms:6.1f} ms  commit max {w.slowest_commit_ms:6.1f} ms  "
        f"cpu {w.cpu_s:6.1f} s  wall {w.wall_s:6.1f} s",
        flush=True,
    )


def table(title: str, rows: list[Window]) -> Table:
    t = Table(title=title)
    for name in (
        "events", "DB MB", "MB/100k", "ingest/s", "process/s", "pruned rows",
        "prune tx max ms", "process tx max ms", "ingest commit max ms", "CPU s", "wall s",
    ):  # fmt: skip
        t.add_column(name, justify="right")
    for w in rows:
        t.add_row(
            f"{w.events:,}", f"{w.db_mb:,.1f}", f"{w.mb_per_100k:,.1f}", f"{w.ingest_rate:,.0f}",
            f"{w.process_rate:,.0f}", f"{w.pruned:,}", f"{w.longest_prune_ms:,.1f}",
            f"{w.longest_batch_ms:,.1f}", f"{w.slowest_commit_ms:,.1f}", f"{w.cpu_s:,.1f}",
            f"{w.wall_s:,.1f}",
        )  # fmt: skip
    return t


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--baseline-events", type=int, default=None, help="default: --events")
    parser.add_argument("--report-every", type=int, default=None, help="default: events / 10")
    parser.add_argument("--contacts", type=int, default=20_000)
    parser.add_argument("--days", type=float, default=100.0, help="virtual days for --events")
    parser.add_argument("--retention-days", type=int, default=3)
    parser.add_argument("--backlog", type=int, default=20_000)
    parser.add_argument(
        "--only", choices=("pruned", "baseline"), default=None, help="run one of the two"
    )
    parser.add_argument("--keep", type=Path, default=None, help="keep the databases here")
    args = parser.parse_args()
    args.report_every = args.report_every or max(args.events // 10, WAVE)
    args.report_every -= args.report_every % WAVE
    args.events_for_clock = args.events  # both runs share one virtual pace: events per day
    workdir = args.keep or Path(tempfile.mkdtemp(prefix="nurture-retention-"))
    workdir.mkdir(parents=True, exist_ok=True)
    console = Console(width=None if sys.stdout.isatty() else 160)  # a log file: no truncation
    print(f"load average at start: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores", flush=True)
    results = {}
    if args.only != "baseline":
        results["pruned"] = run(args, args.events, True, workdir)
    if args.only != "pruned":
        results["baseline"] = run(args, args.baseline_events or args.events, False, workdir)
    for label, result in results.items():
        console.print(table(f"{label}: {result['passes']} pruning passes", result["rows"]))
    sizes = Table(title="where the bytes are at the end (MB, dbstat)")
    sizes.add_column("table")
    for label in results:
        sizes.add_column(label, justify="right")
    names = list(dict.fromkeys(n for r in results.values() for n in r["sizes"]))[:12]
    for name in names:
        sizes.add_row(name, *(f"{r['sizes'].get(name, 0):,.1f}" for r in results.values()))
    console.print(sizes)
    usage = resource.getrusage(resource.RUSAGE_SELF)
    print(
        f"process CPU: user {usage.ru_utime:.0f} s, system {usage.ru_stime:.0f} s; "
        f"load average at end: {os.getloadavg()[0]:.1f}"
    )
    if args.keep is None:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
