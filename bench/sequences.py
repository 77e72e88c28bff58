"""Sequences benchmark: Christmas signups/s through the real event processor, on SQLite and
PostgreSQL, beside the prototype's design ceiling (Notion's 3 requests/s at about 4 calls per
signup: 0.75 signups/s).

What one signup is (the issue's target, >= 1,000 signups/s on SQLite): a ``form.submitted`` from
the default pack's ``christmas-assessment`` form (parsed by the real form source), taken from the
inbox by ``bootstrap.build_processor`` with the default pack and the default batch size, exactly
as ``nurture worker`` runs it; the contact is created, the rules run, and the sequences step
enrols it into ``christmas-2025`` with all 7 steps planned as ``sequence_step`` jobs. The clock
stops when every batch has committed (SQLite ``synchronous=FULL``); the database is then read
back to check that every signup has one live enrollment, 7 scheduled step rows and 7 jobs.

Two baselines run the same events through the same processor: with no steps at all (inbox ->
contact -> processed) and with the default pack minus the sequences step.

    .venv/bin/python bench/sequences.py [--signups 5000] [--repeat 3] [--pg URL] [--no-pg]
                                        [--no-sqlite]

``--pg`` defaults to NURTURE_TEST_DATABASE_URL; throw-away databases are created and dropped.
Each figure is the best of ``--repeat`` runs, with the spread (min-max) beside it, and the
signups per CPU-second of the worker process (what the code costs, whatever else shares the
machine); on PostgreSQL also the CPU its server backends spent per signup (read from /proc when
the server runs on this machine: it shares the cores). SQLite and PostgreSQL take turns run by
run, and the last lines give PostgreSQL's best as a share of SQLite's from the same run (issue
15's target: at least 0.50).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "bench"))

from sqlalchemy import func, select  # noqa: E402

from nurture.bootstrap import build_container, build_processor  # noqa: E402
from nurture.clock import VirtualClock  # noqa: E402
from nurture.config import Settings  # noqa: E402
from nurture.core.events import InboundEvent  # noqa: E402
from nurture.database import migrate  # noqa: E402
from nurture.database.engine import Database  # noqa: E402
from nurture.intake.ingest import build_rows  # noqa: E402
from nurture.pack import load_pack  # noqa: E402
from nurture.providers.catalog import build_sources  # noqa: E402
from nurture.schema.tables import enrollment_steps, enrollments, events, jobs  # noqa: E402
from nurture.storage import events as event_store  # noqa: E402
from rules import PgDatabase, ServerCpu, ratio_line, sqlite_url  # noqa: E402

NOW = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)
NOTION_CEILING = 3 / 4  # 3 requests/s, ~4 Notion calls per signup (search x2, update, create)
SEQUENCE = "christmas-2025"
STEPS = 7
SCORES = ("CRITICAL", "URGENT", "OPTIMIZE")


def signups(n: int) -> list[InboundEvent]:
    """``n`` distinct submissions of the default pack's Christmas assessment form."""
    settings = Settings(database_url="sqlite://", forms_secret="bench")
    form = build_sources(settings, load_pack(None)).forms["christmas-assessment"]
    out = []
    for i in range(n):
        body = {
            "email": f"signup{i}@example.com",
            "first_name": f"Ann{i}",
            "business_name": "Bench Ltd",
            "assessment_score": (i * 37) % 101,
            "red_systems": i % 4,
            "orange_systems": (i // 4) % 3,
            "yellow_systems": 1,
            "submission_id": f"bench-{i}",
        }
        raw = json.dumps(body).encode()
        out.extend(form.parse(raw, {"content-type": "application/json"}))
    return out


def seed(db: Database, inbound: list[InboundEvent]) -> None:
    rows = []
    for i, ev in enumerate(inbound):
        rows.extend(build_rows([ev], None, None, NOW + timedelta(microseconds=i), 64))
    with db.begin() as conn:
        for start in range(0, len(rows), 2000):
            event_store.insert_new(conn, rows[start : start + 2000])


@dataclass
class Run:
    rate: float
    cpu_rate: float
    server_us: float | None  # PostgreSQL: its backends' CPU per signup
    processed: int
    live: int
    step_rows: int
    step_jobs: int


def run(url: str, inbound: list[InboundEvent], steps: str) -> Run:
    """Drain the seeded inbox with the worker's processor; ``steps``: all, no-sequences, none."""
    settings = Settings(database_url=url)
    container = build_container(settings, clock=VirtualClock(NOW + timedelta(seconds=1)))
    server = ServerCpu(container.db.engine)
    migrate.upgrade(container.db)
    seed(container.db, inbound)
    processor = build_processor(container)
    if steps == "none":
        processor.steps = []
    elif steps == "no-sequences":
        processor.steps = [s for s in processor.steps if s.name != "sequences"]
    before = server.sample()
    start, cpu = time.perf_counter(), time.process_time()
    processor.drain()
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    spent = ServerCpu.spent(before, server.sample())
    with container.db.read() as conn:
        by_status = dict(
            conn.execute(
                select(events.c.status, func.count())
                .where(events.c.source != "derived")
                .group_by(events.c.status)
            ).all()
        )
        # Derived events (contact.created, segment.changed) are processed too, in the timing.
        processed = by_status.pop("processed", 0)
        assert not by_status, f"signups left unprocessed: {by_status}"
        live = conn.execute(
            select(func.count()).where(
                enrollments.c.sequence_id == SEQUENCE, enrollments.c.status == "active"
            )
        ).scalar_one()
        step_rows = conn.execute(
            select(func.count()).where(enrollment_steps.c.status == "scheduled")
        ).scalar_one()
        step_jobs = conn.execute(
            select(func.count()).where(jobs.c.kind == "sequence_step", jobs.c.status == "scheduled")
        ).scalar_one()
    container.close()
    n = len(inbound)
    server_us = spent / n * 1e6 if spent is not None else None
    return Run(n / seconds, n / cpu, server_us, processed, live, step_rows, step_jobs)


def measure(
    databases: list[tuple[str, Callable[[], str]]], inbound: list[InboundEvent], repeat: int
) -> Iterator[tuple[str, str, list[Run]]]:
    """``(case, database, runs)``; the databases take turns run by run, so a shared machine's
    load moves both figures alike and their ratio stands."""
    n = len(inbound)
    for steps, _ in CASES:
        runs: dict[str, list[Run]] = {label: [] for label, _ in databases}
        for _ in range(repeat):
            for label, fresh in databases:
                r = run(fresh(), inbound, steps)
                assert r.processed == n, (steps, r)
                want = n if steps == "all" else 0
                # Every signup durably enrolled with all its steps and jobs, nothing more.
                assert (r.live, r.step_rows, r.step_jobs) == (want, STEPS * want, STEPS * want), r
                runs[label].append(r)
        for label, _ in databases:
            yield steps, label, runs[label]


def row(label: str, what: str, runs: list[Run]) -> tuple[str, ...]:
    rates = [r.rate for r in runs]
    spread = f"{min(rates):,.0f}-{max(rates):,.0f}" if len(runs) > 1 else ""
    best_cpu = max(r.cpu_rate for r in runs)
    cpu = f"{best_cpu:,.0f}/s ({1e6 / best_cpu:,.0f} us)"
    server = [r.server_us for r in runs if r.server_us is not None]
    if server:
        cpu += f"; server {min(server):,.0f} us"
    return (f"{label}, 1 worker", what, f"{max(rates):,.0f} signups/s", spread, cpu)


CASES = [
    ("none", "processor, no steps (floor)"),
    ("no-sequences", "default pack minus sequences (baseline)"),
    ("all", f"default pack: signup + {STEPS} steps planned"),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--signups", type=int, default=5000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--pg", default=os.environ.get("NURTURE_TEST_DATABASE_URL", ""))
    parser.add_argument("--no-pg", action="store_true")
    parser.add_argument("--no-sqlite", action="store_true")
    args = parser.parse_args()
    inbound = signups(args.signups)

    print(
        f"sequences benchmark: {args.signups:,} Christmas signups through the worker's event "
        f"processor (default pack), each enrolled with {STEPS} steps as durable jobs"
    )
    show(
        (
            "database",
            "what",
            f"best of {args.repeat}",
            "spread",
            "per worker CPU-s (CPU/signup); server CPU/signup",
        )
    )
    show(("prototype", "Notion design ceiling (3 req/s, ~4 calls)", f"{NOTION_CEILING} signups/s"))
    rates: dict[str, dict[str, list[float]]] = {"sqlite": {}, "postgresql": {}}
    whats = dict(CASES)
    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stack:
        databases: list[tuple[str, Callable[[], str]]] = []
        if not args.no_sqlite:
            databases.append(("sqlite", lambda: sqlite_url(tmp)))
        if args.pg and not args.no_pg:
            pg = PgDatabase(args.pg)
            stack.callback(pg.close)
            databases.append(("postgresql", pg.fresh))
        for steps, label, runs in measure(databases, inbound, args.repeat):
            rates[label][steps] = [r.rate for r in runs]
            show(row(label, whats[steps], runs))
    if rates["sqlite"] and rates["postgresql"]:
        print("same run, one worker each, the two databases taking turns:")
        for steps, what in CASES:
            print(ratio_line(what, rates["postgresql"][steps], rates["sqlite"][steps], "signups/s"))


WIDTHS = (20, 43, 18, 13, 0)


def show(row: tuple[str, ...]) -> None:
    print("  ".join(c.ljust(w) for c, w in zip(row, WIDTHS, strict=False)).rstrip(), flush=True)


if __name__ == "__main__":
    main()
