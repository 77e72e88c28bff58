"""Rules benchmark: ``decide()`` throughput with the default pack (one core), and end-to-end
processed events/s (inbox → contact → rules → score ledger → jobs) on SQLite and PostgreSQL,
each beside a no-op baseline (the same processor with no steps).

    .venv/bin/python bench/rules.py [--events 20000] [--repeat 3] [--pg URL] [--no-pg]
                                    [--no-sqlite]

Contacts exist before the run, three in four with RFM figures (VIP, Standard, At Risk), so the
opened/clicked rules fire for some and not others. Each figure is measured ``--repeat`` times,
each time on a fresh database: the best is shown with the spread (min-max), since a shared
machine moves them. ``--pg`` defaults to NURTURE_TEST_DATABASE_URL; throw-away databases are
created and dropped. Beside each end-to-end figure: the worker's CPU per inbound event and, on
PostgreSQL, its server backends' (they share this machine's cores); the last line gives
PostgreSQL's best as a share of SQLite's from the same run (issue 15's target: at least 0.50).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from sqlalchemy import Engine, create_engine, event, text  # noqa: E402

from nurture.automation.step import RulesStep  # noqa: E402
from nurture.clock import VirtualClock  # noqa: E402
from nurture.config import normalise_database_url  # noqa: E402
from nurture.core.events import ContactRef, InboundEvent  # noqa: E402
from nurture.database import migrate  # noqa: E402
from nurture.database.engine import Database  # noqa: E402
from nurture.intake.context import Step  # noqa: E402
from nurture.intake.ingest import build_rows  # noqa: E402
from nurture.intake.process import EventProcessor  # noqa: E402
from nurture.pack import DEFAULTS_DIR  # noqa: E402
from nurture.rules.book import load  # noqa: E402
from nurture.rules.decide import decide  # noqa: E402
from nurture.storage import contacts as contact_store  # noqa: E402
from nurture.storage import events as event_store  # noqa: E402

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


@dataclass
class E2e:
    rate: float  # inbound events/s
    done: int  # events processed, derived ones included
    client_us: float  # the worker's CPU per inbound event
    server_us: float | None  # its PostgreSQL backends' CPU per inbound event


def bench_e2e(url: str, n: int, steps: list[Step]) -> E2e:
    db = Database(url)
    server = ServerCpu(db.engine)
    migrate.upgrade(db)
    seed(db, n, contacts=max(n // 10, 1))
    processor = EventProcessor(db, VirtualClock(NOW + timedelta(seconds=1)), steps, batch_size=500)
    before, cpu = server.sample(), time.process_time()
    done, seconds = timed(processor.drain)
    cpu, spent = time.process_time() - cpu, ServerCpu.spent(before, server.sample())
    db.dispose()
    assert done >= n, (done, n)
    return E2e(n / seconds, done, cpu / n * 1e6, spent / n * 1e6 if spent is not None else None)


def sqlite_url(directory: str) -> str:
    return f"sqlite:///{directory}/bench-{uuid.uuid4().hex[:8]}.db"


class ServerCpu:
    """CPU seconds of an engine's PostgreSQL backends, read from /proc: the server shares this
    machine's cores, so its CPU per event counts as much as the client's. ``None`` when the
    server's processes cannot be read (another host)."""

    def __init__(self, engine: Engine) -> None:
        self.pids: set[int] = set()
        self.postgresql = engine.dialect.name == "postgresql"
        event.listen(engine, "connect", self._connect)

    def _connect(self, dbapi_conn: Any, _record: Any) -> None:
        pid = getattr(getattr(dbapi_conn, "info", None), "backend_pid", None)
        if pid:
            self.pids.add(int(pid))

    def sample(self) -> dict[int, float] | None:
        if not self.postgresql:
            return None
        out = {}
        tick = os.sysconf("SC_CLK_TCK")
        for pid in self.pids:
            try:
                with open(f"/proc/{pid}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                return None
            out[pid] = (int(fields[11]) + int(fields[12])) / tick
        return out

    @staticmethod
    def spent(before: dict[int, float] | None, after: dict[int, float] | None) -> float | None:
        if before is None or after is None:
            return None
        return sum(after[p] - before.get(p, 0.0) for p in after)


def ratio_line(what: str, pg: list[float], sqlite: list[float], unit: str) -> str:
    """PostgreSQL's best against SQLite's best, measured in the same run."""
    r = max(pg) / max(sqlite)
    return (
        f"  {what}: PostgreSQL {max(pg):,.0f} / SQLite {max(sqlite):,.0f} {unit} = {r:.2f}"
        f" ({'meets' if r >= 0.5 else 'misses'} the 0.50 target)"
    )


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


def e2e(
    databases: list[tuple[str, Callable[[], str]]], n: int, steps: list[Step], repeat: int
) -> dict[str, tuple[list[float], str]]:
    """Per database: the rates of ``repeat`` runs and a description (derived events, CPU per
    inbound event). The databases take turns run by run, so a shared machine's load moves both
    alike and their ratio stands."""
    runs: dict[str, list[E2e]] = {label: [] for label, _ in databases}
    for _ in range(repeat):
        for label, fresh in databases:
            runs[label].append(bench_e2e(fresh(), n, steps))
    out = {}
    for label, done in runs.items():
        best = max(done, key=lambda r: r.rate)
        cpu = f"+{best.done - n} derived; CPU/event: worker {min(r.client_us for r in done):.0f} us"
        servers = [r.server_us for r in done if r.server_us is not None]
        if servers:
            cpu += f", server {min(servers):.0f} us"
        out[label] = ([r.rate for r in done], cpu)
    return out


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
    full: dict[str, tuple[list[float], str]] = {}
    with contextlib.ExitStack() as stack:
        dbs = databases(args, stack)
        base = e2e(dbs, n, [], repeat)
        full = e2e(dbs, n, [RulesStep(automation)], repeat)
    for label, _ in dbs:
        (base_rates, base_cpu), (full_rates, full_cpu) = base[label], full[label]
        who = f"{label}, 1 worker"
        rows.append((who, f"processor, no steps (baseline; {base_cpu})", spread(base_rates)))
        rows.append((who, f"processor + rules step ({full_cpu})", spread(full_rates)))

    width = [max(len(r[i]) for r in rows) for i in range(3)]
    load_avg = os.getloadavg()[0]
    print(f"rules benchmark: {n:,} inbound events, mix of {len(MIX)} types, default pack")
    print(
        "end-to-end rates are inbound events/s; derived events are processed in the same run; "
        f"best of {repeat} (min-max); load average {load_avg:.1f}, {os.cpu_count()} CPUs"
    )
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, width, strict=True)))
    if len(full) == 2:
        print("same run, one worker each, the two databases taking turns:")
        print(ratio_line("rules end to end", full["postgresql"][0], full["sqlite"][0], "events/s"))


def databases(
    args: argparse.Namespace, stack: contextlib.ExitStack
) -> list[tuple[str, Callable[[], str]]]:
    """``(label, fresh database URL maker)`` for SQLite and PostgreSQL, as asked; ``stack``
    removes their databases."""
    out: list[tuple[str, Callable[[], str]]] = []
    if not args.no_sqlite:
        tmp = stack.enter_context(tempfile.TemporaryDirectory())
        out.append(("sqlite", lambda: sqlite_url(tmp)))
    if args.pg and not args.no_pg:
        pg = PgDatabase(args.pg)
        stack.callback(pg.close)
        out.append(("postgresql", pg.fresh))
    return out


if __name__ == "__main__":
    main()
