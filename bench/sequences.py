"""Sequences benchmark: signups/s with all 7 steps of the Christmas sequence durably planned
(enrollment + 7 step rows + 7 jobs, committed), on SQLite and PostgreSQL, beside a baseline (the
same signups through the rules step only) and the prototype's design ceiling (Notion's 3
requests/s at about 4 calls per signup: 0.75 signups/s).

    .venv/bin/python bench/sequences.py [--signups 5000] [--pg URL] [--no-pg]

``--pg`` defaults to NURTURE_TEST_DATABASE_URL; a throw-away database is created and dropped.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "bench"))

from sqlalchemy import func, select  # noqa: E402

from nurture.automation.loader import DEFAULTS_DIR  # noqa: E402
from nurture.clock import VirtualClock  # noqa: E402
from nurture.core.events import ContactRef, InboundEvent  # noqa: E402
from nurture.rules.book import load  # noqa: E402
from nurture.sequences import load as load_sequences  # noqa: E402
from nurture.services.context import Step  # noqa: E402
from nurture.services.ingest import build_rows  # noqa: E402
from nurture.services.process import EventProcessor  # noqa: E402
from nurture.services.rules import RulesStep  # noqa: E402
from nurture.services.sequences import DirectSink, SequenceService, SequencesStep  # noqa: E402
from nurture.storage import contacts as contact_store  # noqa: E402
from nurture.storage import events as event_store  # noqa: E402
from nurture.storage import migrate  # noqa: E402
from nurture.storage.engine import Database  # noqa: E402
from nurture.storage.schema import jobs  # noqa: E402
from rules import PgDatabase, sqlite_url  # noqa: E402

NOW = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)
NOTION_CEILING = 3 / 4  # 3 requests/s, ~4 Notion calls per signup (search x2, update, create)


def seed(db: Database, n: int) -> None:
    rows = []
    for i in range(n):
        data = {"form": "christmas-assessment", "red_systems": i % 3, "assessment_score": 50}
        ev = InboundEvent("bench", "form.submitted", f"{i}", ContactRef(f"s{i}@example.com"), data)
        rows.extend(build_rows([ev], None, None, NOW + timedelta(microseconds=i), 64))
    with db.begin() as conn:
        for start in range(0, len(rows), 2000):
            event_store.insert_new(conn, rows[start : start + 2000])


def pipeline(url: str, n: int, steps: list[Step]) -> tuple[float, int]:
    """Signups/s through the processor (inbox -> contact -> rules [-> sequences]); jobs planned."""
    db = Database(url)
    migrate.upgrade(db)
    seed(db, n)
    processor = EventProcessor(db, VirtualClock(NOW + timedelta(seconds=1)), steps, batch_size=500)
    start = time.perf_counter()
    processor.drain()
    seconds = time.perf_counter() - start
    with db.read() as conn:
        planned = conn.execute(select(func.count()).select_from(jobs)).scalar_one()
    db.dispose()
    return n / seconds, int(planned)


def enroll_only(url: str, n: int, batch: int) -> tuple[float, int]:
    """``SequenceService.enroll`` alone, ``batch`` enrolments per committed transaction."""
    db = Database(url)
    migrate.upgrade(db)
    with db.begin() as conn:
        contacts = contact_store.create_many(conn, [f"e{i}@example.com" for i in range(n)], NOW)
    for c in contacts:
        c.segments = {"assessment": "URGENT"}
    service = SequenceService(load_sequences(DEFAULTS_DIR))
    seq = service.sequence("christmas-2025")
    start = time.perf_counter()
    for first in range(0, n, batch):
        with db.begin() as conn:
            for c in contacts[first : first + batch]:
                sink = DirectSink(conn, c, NOW, 64)
                service.enroll(conn, seq, c, f"contact:{c.id}", now=NOW, sink=sink)
    seconds = time.perf_counter() - start
    with db.read() as conn:
        planned = conn.execute(select(func.count()).select_from(jobs)).scalar_one()
    db.dispose()
    return n / seconds, int(planned)


def measure(label: str, fresh: object, n: int) -> list[tuple[str, str, str]]:
    make = fresh if callable(fresh) else None
    assert make is not None
    automation = load(DEFAULTS_DIR)
    book = load_sequences(DEFAULTS_DIR)
    rows = []
    base, _ = pipeline(make(), n, [RulesStep(automation)])
    rows.append((label, "signup through rules only (baseline)", f"{base:,.0f} signups/s"))
    full, planned = pipeline(
        make(), n, [RulesStep(automation), SequencesStep(SequenceService(book))]
    )
    assert planned == 7 * n, (planned, n)
    rows.append((label, "signup through rules + sequences, 7 jobs", f"{full:,.0f} signups/s"))
    for batch in (1, 500):
        rate, planned = enroll_only(make(), min(n, 2000) if batch == 1 else n, batch)
        rows.append((label, f"enroll() alone, {batch} per commit", f"{rate:,.0f} signups/s"))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--signups", type=int, default=5000)
    parser.add_argument("--pg", default=os.environ.get("NURTURE_TEST_DATABASE_URL", ""))
    parser.add_argument("--no-pg", action="store_true")
    args = parser.parse_args()
    n = args.signups

    rows = [
        ("prototype", "Notion design ceiling (3 req/s, ~4 calls)", f"{NOTION_CEILING} signups/s")
    ]
    with tempfile.TemporaryDirectory() as tmp:
        rows += measure("sqlite, 1 worker", lambda: sqlite_url(tmp), n)
    if args.pg and not args.no_pg:
        pg = PgDatabase(args.pg)
        try:
            rows += measure("postgresql, 1 worker", pg.fresh, n)
        finally:
            pg.close()

    width = [max(len(r[i]) for r in rows) for i in range(3)]
    print(f"sequences benchmark: {n:,} Christmas signups, each planning 7 steps as durable jobs")
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, width, strict=True)))


if __name__ == "__main__":
    main()
