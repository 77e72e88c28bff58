"""Rules benchmark: ``decide()`` throughput with the default pack (one core), and end-to-end
processed events/s (inbox → contact → rules → score ledger → jobs) on SQLite and PostgreSQL,
each beside a no-op baseline (the same processor with no steps).

    .venv/bin/python bench/rules.py [--events 20000] [--pg URL] [--no-pg]

``--pg`` defaults to NURTURE_TEST_DATABASE_URL; a throw-away database is created and dropped.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from sqlalchemy import create_engine, text  # noqa: E402

from nurture.automation.loader import DEFAULTS_DIR  # noqa: E402
from nurture.clock import VirtualClock  # noqa: E402
from nurture.config import normalise_database_url  # noqa: E402
from nurture.core.events import ContactRef, InboundEvent  # noqa: E402
from nurture.rules.book import load  # noqa: E402
from nurture.rules.decide import decide  # noqa: E402
from nurture.services.context import Step  # noqa: E402
from nurture.services.ingest import build_rows  # noqa: E402
from nurture.services.process import EventProcessor  # noqa: E402
from nurture.services.rules import RulesStep  # noqa: E402
from nurture.storage import events as event_store  # noqa: E402
from nurture.storage import migrate  # noqa: E402
from nurture.storage.engine import Database  # noqa: E402

NOW = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)
MIX: list[tuple[str, dict[str, Any]]] = [
    ("email.opened", {}),
    ("email.clicked", {"link": "https://example.com/a"}),
    ("page.viewed", {"url": "/pricing"}),
    ("purchase.completed", {"amount": 80}),
    ("purchase.completed", {"amount": 20}),
    ("email.bounced", {"kind": "soft"}),
    ("email.delivered", {}),
    ("form.submitted", {"form": "christmas-assessment", "red_systems": 1}),
]
SEGMENTS = [{"value": "VIP"}, {"value": "Standard"}, {"value": "At Risk"}, {}]


def contact_view(i: int) -> dict[str, Any]:
    return {
        "id": i,
        "email": f"c{i}@example.com",
        "first_name": "Ann",
        "last_name": None,
        "phone": None,
        "time_zone": None,
        "attributes": {"plan": "pro", "n": i},
        "tags": ["newsletter"],
        "segments": SEGMENTS[i % len(SEGMENTS)],
        "status": "subscribed",
        "score": 50 + i % 40,
        "rfm": {"score": 2.5, "frequency": 2, "recency_days": 30},
        "identities": {},
    }


def timed(fn: Callable[[], int]) -> tuple[int, float]:
    start = time.perf_counter()
    n = fn()
    return n, time.perf_counter() - start


def bench_decide(n: int) -> list[tuple[str, float]]:
    automation = load(DEFAULTS_DIR)
    events = [
        {"id": i, "type": t, "source": "bench", "data": d, "occurred_at": NOW}
        for i, (t, d) in enumerate(MIX * (n // len(MIX) + 1))
    ][:n]
    contacts = [contact_view(i) for i in range(64)]

    def baseline() -> int:
        count = 0
        for i, ev in enumerate(events):
            count += len(automation.candidates(ev["type"])) + len(contacts[i % 64])
        return n

    def run() -> int:
        fired = 0
        for i, ev in enumerate(events):
            fired += len(decide(automation, ev, contacts[i % 64], NOW))
        return n

    out = []
    for name, fn in (("no-op loop (baseline)", baseline), ("decide(), default pack", run)):
        count, seconds = timed(fn)
        out.append((name, count / seconds))
    return out


def seed(db: Database, n: int, contacts: int) -> None:
    rows = []
    for i in range(n):
        type_, data = MIX[i % len(MIX)]
        email = f"c{i % contacts}@example.com"
        ev = InboundEvent("bench", type_, f"{i}", ContactRef(email=email), data)
        rows.extend(build_rows([ev], None, None, NOW + timedelta(microseconds=i), 64))
    with db.begin() as conn:
        for start in range(0, len(rows), 2000):
            event_store.insert_new(conn, rows[start : start + 2000])


def bench_e2e(url: str, n: int, steps: list[Step]) -> tuple[float, int]:
    """Inbound events/s, and how many events were processed including derived ones."""
    db = Database(url)
    migrate.upgrade(db)
    seed(db, n, contacts=max(n // 10, 1))
    processor = EventProcessor(db, VirtualClock(NOW + timedelta(seconds=1)), steps, batch_size=500)
    done, seconds = timed(processor.drain)
    db.dispose()
    assert done >= n, (done, n)
    return n / seconds, done


def sqlite_url(directory: str) -> str:
    return f"sqlite:///{directory}/bench-{uuid.uuid4().hex[:8]}.db"


class PgDatabase:
    def __init__(self, base: str) -> None:
        self.base = normalise_database_url(base)
        self.admin = create_engine(self.base, isolation_level="AUTOCOMMIT")

    def fresh(self) -> str:
        name = f"nurture_bench_{uuid.uuid4().hex[:10]}"
        with self.admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        self.names = [*getattr(self, "names", []), name]
        return self.base.rsplit("/", 1)[0] + "/" + name

    def close(self) -> None:
        with self.admin.connect() as conn:
            for name in getattr(self, "names", []):
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        self.admin.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--pg", default=os.environ.get("NURTURE_TEST_DATABASE_URL", ""))
    parser.add_argument("--no-pg", action="store_true")
    args = parser.parse_args()
    n = args.events

    rows: list[tuple[str, str, str]] = []
    for name, rate in bench_decide(max(n, 50_000)):
        rows.append(("decide", name, f"{rate:,.0f} events/s"))

    automation = load(DEFAULTS_DIR)
    with tempfile.TemporaryDirectory() as tmp:
        base, _ = bench_e2e(sqlite_url(tmp), n, [])
        full, total = bench_e2e(sqlite_url(tmp), n, [RulesStep(automation)])
    rows.append(("sqlite, 1 worker", "processor, no steps (baseline)", f"{base:,.0f} events/s"))
    rows.append(
        (
            "sqlite, 1 worker",
            f"processor + rules step (+{total - n} derived)",
            f"{full:,.0f} events/s",
        )
    )

    if args.pg and not args.no_pg:
        pg = PgDatabase(args.pg)
        try:
            base, _ = bench_e2e(pg.fresh(), n, [])
            full, total = bench_e2e(pg.fresh(), n, [RulesStep(automation)])
        finally:
            pg.close()
        rows.append(
            ("postgresql, 1 worker", "processor, no steps (baseline)", f"{base:,.0f} events/s")
        )
        rows.append(
            (
                "postgresql, 1 worker",
                f"processor + rules step (+{total - n} derived)",
                f"{full:,.0f} events/s",
            )
        )

    width = [max(len(r[i]) for r in rows) for i in range(3)]
    print(f"rules benchmark: {n:,} inbound events, mix of {len(MIX)} types, default pack")
    print("end-to-end rates are inbound events/s; derived events are processed in the same run")
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, width, strict=True)))


if __name__ == "__main__":
    main()
