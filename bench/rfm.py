"""Benchmark: CSV import rate, the full RFM pass and the recommendation pass on SQLite.

    .venv/bin/python bench/rfm.py [--lines 1000000] [--contacts 100000] [--keep DIR]

Generates order lines for the contacts (1-5 lines per order, 300 products, two years of dates),
imports them with ``nurture import orders`` logic (then again: the idempotent re-import), then
times ``nurture rfm`` (compute and store, in-process and as a CLI process), the recommendation
campaign's dry run, and the recommendations API's work for one contact with the model cache
cold (what a request without a cache would cost) and warm. Targets: RFM for 100,000 contacts
from 1,000,000 lines under 5 s including the write-back; import at 50,000 rows/s or more.
The load average is printed: on a shared machine the figures move with it.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import os
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

from rich.console import Console
from rich.table import Table

from nurture.commerce import imports, recommendations
from nurture.commerce import purchases as commerce
from nurture.database import migrate
from nurture.database.engine import Database
from nurture.storage import orders as order_store

NOW = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)


def generate(path: Path, lines: int, contacts: int, seed: int = 1) -> int:
    rng = random.Random(seed)
    products = [f"P{i:04d}" for i in range(300)]
    weights = [1 / (i + 1) for i in range(len(products))]  # a few best sellers, a long tail
    days = [(NOW - timedelta(days=d)).strftime("%Y-%m-%d") for d in range(730)]
    written = order = 0
    with path.open("w", newline="", encoding="utf-8") as f:
        out = csv.writer(f)
        out.writerow(
            ["order_id", "email", "date", "product_key", "quantity", "unit_price", "net_amount"]
        )
        while written < lines:
            order += 1
            email = f"c{rng.randrange(contacts)}@example.com"
            day = days[int(rng.triangular(0, 729, 0))]
            basket = set(rng.choices(products, weights, k=rng.randint(1, 5)))
            for product in basket:
                if written >= lines:
                    break
                qty = rng.randint(1, 6)
                price = rng.choice((8.5, 12.0, 15.9, 24.0, 39.0))
                out.writerow([f"O{order}", email, day, product, qty, price, round(qty * price, 2)])
                written += 1
    return order


class Timer:
    """Wall and CPU seconds per named step. On a shared machine the wall clock moves with the
    load; CPU seconds (all of this process's threads, or the child's) much less so."""

    def __init__(self) -> None:
        self.wall: dict[str, float] = {}
        self.cpu: dict[str, float] = {}

    @contextlib.contextmanager
    def __call__(self, name: str, *, child: bool = False) -> Iterator[None]:
        def cpu_now() -> float:
            if child:
                usage = resource.getrusage(resource.RUSAGE_CHILDREN)
                return usage.ru_utime + usage.ru_stime
            return time.process_time()

        wall, cpu = time.perf_counter(), cpu_now()
        yield
        self.wall[name] = time.perf_counter() - wall
        self.cpu[name] = cpu_now() - cpu


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--lines", type=int, default=1_000_000)
    parser.add_argument("--contacts", type=int, default=100_000)
    parser.add_argument("--keep", type=Path, default=None, help="work in this folder, keep it")
    args = parser.parse_args()
    work = args.keep or Path(tempfile.mkdtemp(prefix="nurture-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    csv_path, db_path = work / "orders.csv", work / "bench.db"
    if db_path.exists():
        db_path.unlink()
    url = f"sqlite:///{db_path}"
    console = Console(width=120)

    started = time.perf_counter()
    orders = generate(csv_path, args.lines, args.contacts)
    gen_s = time.perf_counter() - started
    db = Database(url)
    migrate.upgrade(db)

    load_before = os.getloadavg()
    timer = Timer()
    with timer("import"), csv_path.open("rb") as f:
        summary = imports.import_orders(db, f, NOW)
    with timer("reimport"), csv_path.open("rb") as f:
        again = imports.import_orders(db, f, NOW)

    # Baseline: reading the orders alone, the floor under any RFM pass.
    with timer("read"), db.read() as conn:
        frame = order_store.order_frame(conn)

    config = commerce.CommerceConfig()
    with timer("rfm"):
        result = commerce.recompute_all(db, NOW, config)

    env = {**os.environ, "NURTURE_DATABASE_URL": url}
    exe = Path(sys.executable).with_name("nurture")
    with timer("cli", child=True):
        subprocess.run([str(exe), "rfm"], env=env, check=True, capture_output=True)

    with timer("reco"):
        plan = recommendations.plan_campaign(db, NOW, config)

    contact_id = plan.messages[0]["contact_id"] if plan.messages else 1
    cache = recommendations.ModelCache()
    with timer("cold"):
        recommendations.for_contact(db, contact_id, NOW, config, cache=cache)
    warm_runs = 20
    with timer("warm"):
        for _ in range(warm_runs):
            recommendations.for_contact(db, contact_id, NOW, config, cache=cache)
    load_after = os.getloadavg()
    db.dispose()

    wall, cpu = timer.wall, timer.cpu
    table = Table(title=f"{args.lines:,} order lines, {args.contacts:,} contacts (SQLite)")
    table.add_column("step")
    table.add_column("seconds", justify="right")
    table.add_column("CPU s", justify="right")
    table.add_column("figure", justify="right")
    table.add_column("target", justify="right")
    table.add_row("generate CSV (not timed)", f"{gen_s:.2f}", "", f"{orders:,} orders", "")
    table.add_row(
        "import orders",
        f"{wall['import']:.2f}",
        f"{cpu['import']:.2f}",
        f"{summary.rows / wall['import']:,.0f} rows/s "
        f"({summary.rows / cpu['import']:,.0f} per CPU s)",
        ">= 50,000 rows/s",
    )
    table.add_row(
        "re-import (all duplicates)",
        f"{wall['reimport']:.2f}",
        f"{cpu['reimport']:.2f}",
        f"{again.rows / wall['reimport']:,.0f} rows/s",
        f"{again.accepted} added",
    )
    table.add_row(
        "baseline: read orders only",
        f"{wall['read']:.2f}",
        f"{cpu['read']:.2f}",
        f"{frame.height:,} orders",
        "",
    )
    table.add_row(
        "rfm: read + compute + write",
        f"{wall['rfm']:.2f}",
        f"{cpu['rfm']:.2f}",
        f"r {result.read_seconds:.2f} / c {result.compute_seconds:.2f} / "
        f"w {result.write_seconds:.2f}",
        "< 5 s",
    )
    table.add_row(
        "`nurture rfm` (process, wall)",
        f"{wall['cli']:.2f}",
        f"{cpu['cli']:.2f}",
        f"{result.contacts:,} contacts",
        "",
    )
    table.add_row(
        "recommendation pass (dry run)",
        f"{wall['reco']:.2f}",
        f"{cpu['reco']:.2f}",
        f"{len(plan.messages):,} contacts planned",
        "",
    )
    table.add_row(
        "API recommendations, model cold",
        f"{wall['cold']:.2f}",
        f"{cpu['cold']:.2f}",
        "reads every line, builds the model",
        "",
    )
    table.add_row(
        "API recommendations, model cached",
        f"{wall['warm'] / warm_runs:.3f}",
        f"{cpu['warm'] / warm_runs:.3f}",
        f"mean of {warm_runs} requests",
        "",
    )
    console.print(table)
    console.print(
        f"rejected rows: {summary.rejected}; load average (1 min) "
        f"{load_before[0]:.2f} before, {load_after[0]:.2f} after, {os.cpu_count()} CPUs",
        highlight=False,
    )
    if args.keep:
        console.print(f"work folder kept: {work}", highlight=False)
    else:
        shutil.rmtree(work, ignore_errors=True)  # a 1M-line CSV and its database: ~250 MB


if __name__ == "__main__":
    main()
