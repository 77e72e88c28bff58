"""A 100,000-contact campaign end to end: audience query, enrolment, render, send.

    .venv/bin/python bench/campaign.py [--contacts 100000] [--pg-workers 2]
                                         [--skip-pg] [--skip-sqlite]

The campaign is the product-recommendation campaign (``nurture campaigns recommend --send``):
every contact has bought something (orders imported with the CSV importer, then the RFM pass,
neither timed as part of the campaign), so every one is in the audience. Timed phases:

1. audience: ``plan_campaign`` (eligibility, silence window, scenario and items per buyer);
2. enrol: ``send_campaign`` (a ``send_email`` job per contact, the silence stamp on the contact,
   a timeline note), in transactions of 1,000;
3. send: worker processes (the real ``JobWorker`` loop and delivery handler, batched) render the
   ``recommendations`` template for each contact and send it to the recording sink (dry run)
   until the queue is empty; exactly one ``sent`` row per contact is checked.

SQLite runs one worker (a single writer); PostgreSQL runs ``--pg-workers`` on
NURTURE_BENCH_PG_URL (default postgresql://postgres@127.0.0.1:5432/test), in a database created
and dropped here. CPU per e-mail is the workers' process CPU time over the e-mails sent.
"""

from __future__ import annotations

import argparse
import csv
import os
import random
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import func, select

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "bench"))

from delivery import run_workers, with_pg_database  # noqa: E402
from nurture.clock import SystemClock  # noqa: E402
from nurture.commerce import imports, recommendations  # noqa: E402
from nurture.commerce import purchases as commerce  # noqa: E402
from nurture.database import migrate  # noqa: E402
from nurture.database.engine import Database  # noqa: E402
from nurture.schema.tables import messages  # noqa: E402


def generate(path: Path, contacts: int, seed: int = 7) -> int:
    """Every contact buys 1-3 times (1-3 lines each) in the last two years."""
    rng = random.Random(seed)
    now = SystemClock().now()
    products = [f"P{i:03d}" for i in range(200)]
    weights = [1 / (i + 1) for i in range(len(products))]
    days = [(now - timedelta(days=d)).strftime("%Y-%m-%d") for d in range(1, 730)]
    lines = order = 0
    with path.open("w", newline="", encoding="utf-8") as f:
        out = csv.writer(f)
        out.writerow(
            ["order_id", "email", "date", "product_key", "quantity", "unit_price", "net_amount"]
        )
        for c in range(contacts):
            for _ in range(rng.randint(1, 3)):
                order += 1
                day = rng.choice(days)
                for product in set(rng.choices(products, weights, k=rng.randint(1, 3))):
                    qty = rng.randint(1, 4)
                    price = rng.choice((8.5, 12.0, 24.0, 39.0))
                    out.writerow(
                        [f"O{order}", f"c{c}@example.com", day, product, qty, price, qty * price]
                    )
                    lines += 1
    return lines


def send(url: str, workers: int, total: int, outbox: Path) -> tuple[float, float, int]:
    """Drain the queue with ``workers`` processes: (wall s, CPU s of all workers, RSS kB max)."""
    started, answers = run_workers(
        workers,
        lambda w: (url, "recording", 0, "", str(outbox), f"campaign-w{w}", total),
        timeout=7200,
    )
    rss = max(max((s[1] for s in a[3]), default=0) for a in answers)
    return max(a[1] for a in answers) - started, sum(a[2] for a in answers), rss


def campaign(url: str, contacts: int, workers: int, work: Path) -> dict[str, Any]:
    db = Database(url)
    migrate.upgrade(db)
    csv_path = work / "orders.csv"
    lines = generate(csv_path, contacts)
    now = SystemClock().now()
    out: dict[str, Any] = {"lines": lines}
    started = time.perf_counter()
    with csv_path.open("rb") as f:
        imports.import_orders(db, f, now)
    config = commerce.CommerceConfig()
    commerce.recompute_all(db, now, config)
    out["setup"] = time.perf_counter() - started

    t, cpu = time.perf_counter(), time.process_time()
    plan = recommendations.plan_campaign(db, now, config, silence_days=0)
    out["audience"] = (time.perf_counter() - t, time.process_time() - cpu)
    t, cpu = time.perf_counter(), time.process_time()
    queued = recommendations.send_campaign(db, plan, now)
    out["enrol"] = (time.perf_counter() - t, time.process_time() - cpu)
    out["queued"], out["considered"] = queued, plan.considered
    wall, worker_cpu, rss = send(url, workers, queued, work / "outbox")
    out["send"] = (wall, worker_cpu)
    out["rss"] = rss
    with db.read() as conn:
        sent = conn.execute(
            select(func.count())
            .select_from(messages)
            .where(messages.c.template == recommendations.TEMPLATE, messages.c.status == "sent")
        ).scalar_one()
    db.dispose()
    if sent != queued:
        raise SystemExit(f"{sent} e-mails sent for {queued} queued")
    out["sent"] = sent
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--contacts", type=int, default=100_000)
    parser.add_argument("--pg-workers", type=int, default=2)
    parser.add_argument("--skip-pg", action="store_true")
    parser.add_argument("--skip-sqlite", action="store_true")
    args = parser.parse_args()
    load = os.getloadavg()
    results: list[tuple[str, int, dict[str, Any]]] = []
    if not args.skip_sqlite:
        work = Path(tempfile.mkdtemp(prefix="nurture-campaign-"))
        results.append(
            ("sqlite", 1, campaign(f"sqlite:///{work}/bench.db", args.contacts, 1, work))
        )
    if not args.skip_pg:
        work = Path(tempfile.mkdtemp(prefix="nurture-campaign-"))
        found = with_pg_database(lambda u: campaign(u, args.contacts, args.pg_workers, work))
        results.append(("postgresql", args.pg_workers, found))
    print(
        f"\ncampaign to {args.contacts:,} contacts; load average before {load[0]:.1f} on "
        f"{os.cpu_count()} cores (shared machine: wall figures move with the load)"
    )
    header = (
        f"{'database':<11}{'workers':>8}{'audience s':>11}{'enrol s':>9}{'send s':>9}"
        f"{'total s':>9}{'sent':>9}{'e-mails/s send':>16}{'end to end':>12}{'CPU ms/e-mail':>15}"
    )
    print(header)
    print("-" * len(header))
    for database, workers, r in results:
        audience, enrol, sending = r["audience"][0], r["enrol"][0], r["send"][0]
        total = audience + enrol + sending
        print(
            f"{database:<11}{workers:>8}{audience:>11.1f}{enrol:>9.1f}{sending:>9.1f}{total:>9.1f}"
            f"{r['sent']:>9,}{r['sent'] / sending:>16.0f}{r['sent'] / total:>12.0f}"
            f"{r['send'][1] / r['sent'] * 1000:>15.3f}"
        )
    for database, _, r in results:
        print(
            f"{database}: setup (import {r['lines']:,} order lines + RFM, not timed above) "
            f"{r['setup']:.1f} s; worker RSS peak {r['rss'] / 1024:.0f} MiB; "
            f"audience CPU {r['audience'][1]:.1f} s, enrol CPU {r['enrol'][1]:.1f} s"
        )


if __name__ == "__main__":
    main()
