"""Delivery throughput: e-mails/s through the job queue with one and two worker processes, for
the recording channel (dry run: the no-op baseline), the console channel (``.eml`` files) and
SMTP to a local aiosmtpd server; and the cost of rendering a template per message.

    .venv/bin/python bench/delivery.py [--messages 400] [--repeat 3] [--database-url URL]

Each run enqueues ``--messages`` ``send_email`` jobs (template ``thank_you``, one contact
each), then starts the worker processes together; each runs the real ``JobWorker`` loop with
the real delivery handler (claim, suppression check, render, rate-limit token, ``messages``
claim committed, channel, completion) until the queue is empty. The time is from the start
signal to the last worker's last completion. Every run checks that each message was sent
exactly once (``messages`` rows and, for SMTP, the server's count). The console channel has
no rate limit by default; SMTP's shared bucket (default 10/s) is kept, a token per e-mail, but
raised out of the way. SMTP opens one connection per message (no pooling), as the sender does.
On SQLite every commit is fsynced (``synchronous=FULL``): each e-mail costs the claim's commit
and the completion's (plus a token's where a rate limit applies), so the disk sets the pace and
a second process mostly adds lock contention. On PostgreSQL a second worker helps only when a
core is free for it: each e-mail also costs a few ms of CPU (MIME building ~3 ms, rendering,
SQLAlchemy).
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import os
import socket
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller
from sqlalchemy import func, select

from nurture.bootstrap import build_container
from nurture.bootstrap.delivery import build_delivery, register
from nurture.clock import SystemClock
from nurture.config import Settings
from nurture.jobs import HandlerRegistry, JobSpec, JobWorker, enqueue_many
from nurture.messaging.templates import SAMPLE, template_store
from nurture.pack import load_pack
from nurture.schema.tables import jobs, messages
from nurture.storage import contacts as contact_store
from nurture.storage import migrate
from nurture.storage.engine import Database

CHANNELS = ("recording", "console", "smtp")
LABELS = {
    "recording": "recording (no-op)",
    "console": "console (.eml files)",
    "smtp": "smtp (local aiosmtpd)",
}
UNFINISHED = ("scheduled", "running", "failed")
STOP_GRACE_SECONDS = 60


class Sink:
    def __init__(self) -> None:
        self.count = 0

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.count += 1
        return "250 OK"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def settings_for(url: str, channel: str, smtp_port: int, outbox: Path) -> Settings:
    return Settings(
        database_url=url,
        email_provider="smtp" if channel == "smtp" else "console",
        smtp_url=f"smtp://127.0.0.1:{smtp_port}",
        outbox_dir=outbox,
        secret_key="bench-secret",
        dry_run=channel == "recording",
        # Console has no default limit (no bucket at all); SMTP's default is 10/s: keep its
        # bucket (a token per send is part of the path) but out of the way.
        email_rate_per_second=1_000_000 if channel == "smtp" else 0,
        log_level="WARNING",
    )


def worker_process(
    url: str,
    channel: str,
    smtp_port: int,
    outbox: str,
    name: str,
    ready: Any,
    go: Any,
    results: Any,
) -> None:
    parent = os.getppid()
    settings = settings_for(url, channel, smtp_port, Path(outbox))
    container = build_container(settings)
    registry = HandlerRegistry()
    services = build_delivery(settings, container.db, container.clock)
    register(registry, services)
    worker = JobWorker(container, registry, worker_id=name)

    def unfinished() -> bool:
        with container.db.read() as conn:
            found = conn.execute(
                select(jobs.c.id).where(jobs.c.status.in_(UNFINISHED)).limit(1)
            ).first()
        return found is not None

    async def main() -> float:
        stop = asyncio.Event()

        async def until_empty() -> None:
            # Also stop when the bench itself is gone: an orphan would take the next runs' jobs.
            while os.getppid() == parent and await asyncio.to_thread(unfinished):
                await asyncio.sleep(0.05)
            stop.set()

        async def stuck() -> None:
            # The worker must stop soon after the queue is empty; if not, show where it waits.
            await stop.wait()
            await asyncio.sleep(STOP_GRACE_SECONDS)
            print(f"{name}: still running {STOP_GRACE_SECONDS}s after stop:", file=sys.stderr)
            for task in asyncio.all_tasks():
                task.print_stack(file=sys.stderr)
            sys.stderr.flush()
            os._exit(3)

        watcher = asyncio.create_task(until_empty())
        guard = asyncio.create_task(stuck())
        await worker.run(stop)
        finished = time.time()
        guard.cancel()
        await watcher
        await services.aclose()
        return finished

    ready.set()
    go.wait()
    try:
        results.put((name, asyncio.run(main())))
    finally:
        container.close()


def one_run(
    db: Database,
    url: str,
    channel: str,
    workers: int,
    contact_ids: list[int],
    tag: str,
    smtp_port: int,
    outbox: Path,
) -> float:
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
    with db.begin() as conn:
        enqueue_many(conn, specs, now=now)
    ctx = mp.get_context("spawn")
    go = ctx.Event()
    results = ctx.Queue()
    procs, readies = [], []
    for w in range(workers):
        ready = ctx.Event()
        proc = ctx.Process(
            daemon=True,
            target=worker_process,
            args=(url, channel, smtp_port, str(outbox), f"{tag}-w{w}", ready, go, results),
        )
        proc.start()
        procs.append(proc)
        readies.append(ready)
    for ready in readies:
        ready.wait(60)
    started = time.time()
    go.set()
    ends = [results.get(timeout=300)[1] for _ in procs]
    for proc in procs:
        proc.join(60)
    with db.read() as conn:
        sent = conn.execute(
            select(func.count())
            .select_from(messages)
            .where(messages.c.key.like(f"bench:{tag}:%"), messages.c.status == "sent")
        ).scalar_one()
    if sent != len(contact_ids):
        raise SystemExit(f"{tag}: {sent} sent for {len(contact_ids)} jobs")
    return len(contact_ids) / (max(ends) - started)


def render_cost(n: int) -> tuple[float, float]:
    templates = template_store(load_pack(None, cwd=Path("/nonexistent")))
    variables = {**SAMPLE, "event": None}
    noop: Callable[[], object] = lambda: dict(variables)  # noqa: E731
    started = time.perf_counter()
    for _ in range(n):
        noop()
    base = (time.perf_counter() - started) / n
    templates.render("thank_you", variables)  # compile once, as a worker does
    started = time.perf_counter()
    for _ in range(n):
        templates.render("thank_you", variables)
    return base * 1e6, (time.perf_counter() - started) / n * 1e6


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--messages", type=int, default=400)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--database-url", default=None)
    parser.add_argument("--channels", default=",".join(CHANNELS))
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="nurture-bench-"))
    url = args.database_url or f"sqlite:///{tmp / 'bench.db'}"
    db = Database(url)
    migrate.upgrade(db)
    now = SystemClock().now()
    stamp = time.time_ns()
    with db.begin() as conn:
        ids = [
            contact_store.create(conn, f"c{i}-{stamp}@example.com", now, {"first_name": "Ann"}).id
            for i in range(args.messages)
        ]
    sink = Sink()
    port = free_port()
    controller = Controller(sink, hostname="127.0.0.1", port=port)
    controller.start()
    rows = []
    try:
        for channel in args.channels.split(","):
            for workers in (1, 2):
                rates = []
                for rep in range(args.repeat):
                    tag = f"{channel}-{workers}-{rep}-{stamp}"
                    before = sink.count
                    rates.append(
                        one_run(db, url, channel, workers, ids, tag, port, tmp / f"out-{tag}")
                    )
                    if channel == "smtp" and sink.count - before != len(ids):
                        raise SystemExit(f"{tag}: the SMTP server got {sink.count - before}")
                rows.append((channel, workers, rates))
    finally:
        controller.stop()
        db.dispose()
    print(
        f"database: {url.split(':', 1)[0]}, {args.messages} e-mails per run, best of {args.repeat}"
    )
    print(f"{'channel':<24}{'workers':>8}{'e-mails/s':>11}{'spread':>18}{'ms/e-mail':>11}")
    for channel, workers, rates in rows:
        best = max(rates)
        spread = f"{min(rates):.0f}-{best:.0f}"
        print(f"{LABELS[channel]:<24}{workers:>8}{best:>11.0f}{spread:>18}{1000 / best:>11.2f}")
    base, render = render_cost(2000)
    print(
        f"\nrender thank_you (subject + html + text): {render:.0f} µs/message "
        f"(baseline: copying the variables, {base:.1f} µs)"
    )
    if len(rows) and statistics.mean(max(r) for _, _, r in rows) > 0:
        console = max((max(r) for c, _, r in rows if c == "console"), default=0.0)
        if console:
            print(
                f"= {render / (1e6 / console) * 100:.0f}% of the console channel's time per e-mail"
            )


if __name__ == "__main__":
    main()
