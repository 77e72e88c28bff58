"""Rules benchmark: ``decide()`` throughput with the default pack (one core), and end-to-end
processed events/s (inbox → contact → rules → score ledger → jobs) on SQLite and PostgreSQL,
each beside a no-op baseline (the same processor with no steps).

    .venv/bin/python bench/rules.py [--events 20000] [--repeat 3] [--pg URL] [--no-pg]
                                    [--no-sqlite]

Contacts exist before the run, three in four with RFM figures (VIP, Standard, At Risk), so the
opened/clicked rules fire for some and not others. Each figure is measured ``--repeat`` times,
each time on a fresh database: the best is shown with the spread (min-max), since a shared
machine moves them. ``--pg`` defaults to NURTURE_TEST_DATABASE_URL; throw-away databases are
created and dropped.
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

from nurture.automation.step import RulesStep  # noqa: E402
from nurture.clock import VirtualClock  # noqa: E402
from nurture.config import normalise_database_url  # noqa: E402
from nurture.core.events import ContactRef, InboundEvent  # noqa: E402
from nurture.intake.context import Step  # noqa: E402
from nurture.intake.ingest import build_rows  # noqa: E402
from nurture.intake.process import EventProcessor  # noqa: E402
from nurture.pack import DEFAULTS_DIR  # noqa: E402
from nurture.rules.book import load  # noqa: E402
from nurture.rules.decide import decide  # noqa: E402
from nurture.storage import contacts as contact_store  # noqa: E402
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


def spread(rates: list[float]) -> str:
    """The best rate, with the spread of the runs."""
    if len(rates) == 1:
        return f"{rates[0]:,.0f} events/s"
    return f"{max(rates):,.0f} events/s  ({min(rates):,.0f}..{max(rates):,.0f})"


def bench_decide(n: int, repeat: int) -> list[tuple[str, list[float]]]:
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
        rates = []
        for _ in range(repeat):
            count, seconds = timed(fn)
            rates.append(count / seconds)
        out.append((name, rates))
    return out


RFM = [
    {"recency_days": 10, "frequency": 4, "monetary": 900.0, "score": 3.7},  # VIP
    {"recency_days": 40, "frequency": 2, "monetary": 200.0, "score": 2.5},  # Standard
    {"recency_days": 120, "frequency": 2, "monetary": 60.0, "score": 1.2},  # At Risk
    None,  # no purchase: no value segment
]


def seed_contacts(db: Database, contacts: int) -> None:
    with db.begin() as conn:
        states = contact_store.create_many(
            conn, [f"c{i}@example.com" for i in range(contacts)], NOW
        )
        for i, state in enumerate(states):
            rfm = RFM[i % len(RFM)]
            if rfm is not None:
                last_order = NOW - timedelta(days=int(rfm["recency_days"]))
                state.rfm = {**rfm, "last_order_at": last_order.isoformat()}
        contact_store.save_many(conn, states, NOW)


def seed(db: Database, n: int, contacts: int) -> None:
    seed_contacts(db, contacts)
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


def e2e(urls: Callable[[], str], n: int, steps: list[Step], repeat: int) -> tuple[list[float], int]:
    rates, total = [], 0
    for _ in range(repeat):
        rate, total = bench_e2e(urls(), n, steps)
        rates.append(rate)
    return rates, total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--pg", default=os.environ.get("NURTURE_TEST_DATABASE_URL", ""))
    parser.add_argument("--no-pg", action="store_true")
    parser.add_argument("--no-sqlite", action="store_true")
    args = parser.parse_args()
    n, repeat = args.events, max(args.repeat, 1)

    rows: list[tuple[str, str, str]] = []
    for name, rates in bench_decide(max(n, 50_000), repeat):
        rows.append(("decide", name, spread(rates)))

    automation = load(DEFAULTS_DIR)
    if not args.no_sqlite:
        with tempfile.TemporaryDirectory() as tmp:
            base, _ = e2e(lambda: sqlite_url(tmp), n, [], repeat)
            full, total = e2e(lambda: sqlite_url(tmp), n, [RulesStep(automation)], repeat)
        rows.append(("sqlite, 1 worker", "processor, no steps (baseline)", spread(base)))
        rows.append(
            ("sqlite, 1 worker", f"processor + rules step (+{total - n} derived)", spread(full))
        )

    if args.pg and not args.no_pg:
        pg = PgDatabase(args.pg)
        try:
            base, _ = e2e(pg.fresh, n, [], repeat)
            full, total = e2e(pg.fresh, n, [RulesStep(automation)], repeat)
        finally:
            pg.close()
        rows.append(("postgresql, 1 worker", "processor, no steps (baseline)", spread(base)))
        rows.append(
            (
                "postgresql, 1 worker",
                f"processor + rules step (+{total - n} derived)",
                spread(full),
            )
        )

    width = [max(len(r[i]) for r in rows) for i in range(3)]
    load_avg = os.getloadavg()[0]
    print(f"rules benchmark: {n:,} inbound events, mix of {len(MIX)} types, default pack")
    print(
        "end-to-end rates are inbound events/s; derived events are processed in the same run; "
        f"best of {repeat} (min-max); load average {load_avg:.1f}, {os.cpu_count()} CPUs"
    )
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, width, strict=True)))


if __name__ == "__main__":
    main()
