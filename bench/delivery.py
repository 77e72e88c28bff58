"""Delivery throughput: e-mails/s through the recording (no-op) channel, the console channel and a
local aiosmtpd server, with one and two concurrent senders, and the cost of rendering.

    .venv/bin/python bench/delivery.py [--messages 500] [--database-url sqlite:///...]

Every send goes the full path: suppression check, render, claim (committed), channel, complete.
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller

from nurture.automation import load_pack
from nurture.clock import SystemClock
from nurture.core.channels import EmailChannel
from nurture.delivery import template_store
from nurture.providers.console.sender import ConsoleEmail
from nurture.providers.smtp.sender import SmtpEmail
from nurture.services.deliver import Delivery, DeliveryConfig
from nurture.services.templates import SAMPLE
from nurture.storage import contacts as contact_store
from nurture.storage import migrate
from nurture.storage.engine import Database
from nurture.testing_channels import RecordingEmail, RecordingSms


@dataclass
class Job:
    key: str
    payload: dict[str, Any]
    attempt: int = 1


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


def run(
    db: Database, channel: EmailChannel, contact_ids: list[int], workers: int, tag: str
) -> float:
    clock = SystemClock()
    config = DeliveryConfig("Shop <shop@example.com>", "https://shop.example.com", "bench-key")
    templates = template_store(load_pack(None, cwd=Path("/nonexistent")))
    delivery = Delivery(db, clock, config, templates, channel, RecordingSms())
    jobs = [
        Job(
            f"bench:{tag}:{i}",
            {"template": "thank_you", "contact_id": cid, "transactional": False, "vars": {}},
        )
        for i, cid in enumerate(contact_ids)
    ]

    async def worker(queue: list[Job]) -> None:
        for job in queue:
            await delivery.send_email(job)

    async def main() -> None:
        await asyncio.gather(*(worker(jobs[w::workers]) for w in range(workers)))

    started = time.perf_counter()
    asyncio.run(main())
    return len(jobs) / (time.perf_counter() - started)


def render_cost(n: int) -> tuple[float, float]:
    templates = template_store(load_pack(None, cwd=Path("/nonexistent")))
    noop: Callable[[], object] = lambda: dict(SAMPLE)  # noqa: E731
    started = time.perf_counter()
    for _ in range(n):
        noop()
    base = (time.perf_counter() - started) / n
    started = time.perf_counter()
    for _ in range(n):
        templates.render("thank_you", SAMPLE)
    return base * 1e6, (time.perf_counter() - started) / n * 1e6


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--messages", type=int, default=500)
    parser.add_argument("--database-url", default=None)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="nurture-bench-"))
    url = args.database_url or f"sqlite:///{tmp / 'bench.db'}"
    db = Database(url)
    migrate.upgrade(db)
    now = SystemClock().now()
    with db.begin() as conn:
        ids = [
            contact_store.create(
                conn, f"c{i}-{time.time_ns()}@example.com", now, {"first_name": "Ann"}
            ).id
            for i in range(args.messages)
        ]
    sink = Sink()
    port = free_port()
    controller = Controller(sink, hostname="127.0.0.1", port=port)
    controller.start()
    rows = []
    try:
        for workers in (1, 2):
            for name, channel in (
                ("recording (no-op)", RecordingEmail()),
                ("console (.eml files)", ConsoleEmail(tmp / f"outbox-{workers}", SystemClock())),
                ("smtp (local aiosmtpd)", SmtpEmail(f"smtp://127.0.0.1:{port}", SystemClock())),
            ):
                rate = run(db, channel, ids, workers, f"{name}-{workers}")
                rows.append((name, workers, rate))
    finally:
        controller.stop()
        db.dispose()
    print(f"database: {url.split(':', 1)[0]}, {args.messages} e-mails per run")
    print(f"{'channel':<24}{'workers':>8}{'e-mails/s':>12}")
    for name, workers, rate in rows:
        print(f"{name:<24}{workers:>8}{rate:>12.0f}")
    base, render = render_cost(2000)
    print(
        f"\nrender thank_you (subject+html+text): {render:.0f} µs/message "
        f"(baseline dict copy {base:.1f} µs)"
    )


if __name__ == "__main__":
    main()
