"""Console benchmark: server time of every console page on a big SQLite database.

Seeds 100,000 contacts, 1,000,000 events (a week of them, several sources and types), 1,000,000
jobs (mostly done, some waiting, late, running and dead), 200,000 sent messages, the intake
roll-ups those events imply and a full Inbox, with bulk inserts; then logs in and times each page
in process (ASGI, no network), after one warm-up view each. Prints p50/p95/max per page against
its budget (150 ms, the overview 300 ms).

    .venv/bin/python bench/console.py [--contacts 100000] [--events 1000000] [--jobs 1000000]
        [--requests 40] [--db PATH] [--keep]

``--db PATH --keep`` keeps (or reuses, when it exists) the seeded file, for looking at the pages
with ``NURTURE_DATABASE_URL=sqlite:///PATH nurture serve``.

Adding a page: append ``Page("Name", "/console/...", budget_ms)`` to ``PAGES``; if it reads
tables not seeded here, add a seeder to ``SEEDERS`` (a function of the sqlite3 connection, the
sizes and the random generator; bulk ``executemany``, timestamps through ``ts``).
"""

from __future__ import annotations

import argparse
import random
import re
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from nurture.accounts import users  # noqa: E402
from nurture.bootstrap import build_container  # noqa: E402
from nurture.config import Settings  # noqa: E402
from nurture.database import migrate  # noqa: E402
from nurture.database.engine import Database  # noqa: E402

NOW = datetime.now(UTC)
WEEK = 7 * 24 * 3600
ADMIN = ("bench", "bench-password-long")


@dataclass(frozen=True)
class Page:
    name: str
    path: str
    budget_ms: float


# Every console page; the other pages append theirs (see the module docstring).
PAGES = [
    Page("Overview, 24 h", "/console", 300),
    Page("Overview, 7 days", "/console?window=7d", 300),
    Page("Jobs (dead)", "/console/jobs", 150),
    Page("Jobs (late)", "/console/jobs?show=late", 150),
    Page("Jobs (running)", "/console/jobs?show=running", 150),
    Page("Jobs (recent)", "/console/jobs?show=recent", 150),
    Page("Job", "/console/jobs/{dead_job}", 150),
    Page("Inbox", "/console/inbox", 150),
    Page("Inbox, rejected from brevo", "/console/inbox?source=brevo&outcome=rejected", 150),
    Page("Inbox request", "/console/inbox/{delivery}", 150),
    Page("Contacts", "/console/contacts", 150),
    Page("Contacts, e-mail prefix", "/console/contacts?q=contact4242", 150),
    Page("Contacts, name prefix", "/console/contacts?q=first777", 150),
    Page("Contacts, score 90-95", "/console/contacts?score_min=90&score_max=95", 150),
    Page("Contacts, tag", "/console/contacts?tag=vip", 150),
    Page("Contacts, segment", "/console/contacts?segment=assessment%3DCRITICAL", 150),
    Page(
        "Contacts, tag+segment+score",
        "/console/contacts?tag=webinar&segment=value%3DVIP&score_min=95",
        150,
    ),
    Page("Contact", "/console/contacts/{contact}", 150),
    Page("Sequences", "/console/sequences", 150),
    Page("Sequence funnel", "/console/sequences/christmas-2025", 150),
    Page("Rules", "/console/rules", 150),
    Page("Templates", "/console/templates", 150),
    Page("Template preview", "/console/templates/christmas_email_1?contact={contact}", 150),
]


@dataclass(frozen=True)
class Sizes:
    contacts: int
    events: int
    jobs: int
    messages: int


def ts(seconds_ago: float) -> str:
    """A time ``seconds_ago`` before the run, as ``UtcDateTime`` stores it on SQLite."""
    return (
        (NOW - timedelta(seconds=seconds_ago)).replace(tzinfo=None).isoformat(" ", "microseconds")
    )


def chunks(rows: Iterator[tuple[Any, ...]], size: int = 50_000) -> Iterator[list[tuple[Any, ...]]]:
    batch: list[tuple[Any, ...]] = []
    for row in rows:
        batch.append(row)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def insert(
    conn: sqlite3.Connection, table: str, columns: str, rows: Iterator[tuple[Any, ...]]
) -> None:
    marks = ", ".join("?" for _ in columns.split(","))
    sql = f"INSERT INTO {table} ({columns}) VALUES ({marks})"
    for batch in chunks(rows):
        conn.executemany(sql, batch)


def seed_contacts(conn: sqlite3.Connection, n: Sizes, rng: random.Random) -> None:
    tags = ["vip", "newsletter", "christmas", "webinar", "lead", "customer"]
    assessment = ["CRITICAL", "URGENT", "OPTIMIZE"]
    value = ["VIP", "Standard", "At Risk", "Churn"]

    def segments() -> dict[str, str]:
        out = {"assessment": rng.choice(assessment)} if rng.random() < 0.4 else {}
        if rng.random() < 0.3:
            out["value"] = rng.choice(value)
        return out

    def rows() -> Iterator[tuple[Any, ...]]:
        for i in range(1, n.contacts + 1):
            age = rng.random() * 90 * 86400
            yield (
                i,
                f"contact{i}@example.com",
                f"First{i}",
                f"Last{i}",
                orjson.dumps({"company": f"Company {i % 5000}"}).decode(),
                orjson.dumps(rng.sample(tags, rng.randint(0, 3))).decode(),
                orjson.dumps(segments()).decode(),
                "subscribed" if rng.random() > 0.03 else "unsubscribed",
                rng.randint(0, 100),
                "{}",
                ts(age),
                ts(age / 2),
                ts(rng.random() * WEEK),
            )

    insert(
        conn,
        "contacts",
        "id, email, first_name, last_name, attributes, tags, segments, status, score, "
        "engagement, created_at, updated_at, last_event_at",
        rows(),
    )


# source -> (share of events, event types)
SOURCES = {
    "track": (0.45, ["page.viewed", "link.clicked", "form.submitted"]),
    "brevo": (
        0.30,
        [
            "email.delivered",
            "email.opened",
            "email.clicked",
            "email.bounced",
            "email.unsubscribed",
            "email.complained",
        ],
    ),
    "forms": (0.10, ["form.submitted"]),
    "calcom": (0.05, ["booking.created", "booking.cancelled", "booking.rescheduled"]),
    "stripe": (0.05, ["purchase.completed"]),
    "resend": (0.05, ["email.delivered", "email.opened"]),
}
WEIGHTS = {"email.bounced": 0.03, "email.unsubscribed": 0.01, "email.complained": 0.005}


def _event_kinds(rng: random.Random, count: int) -> list[tuple[str, str]]:
    names = list(SOURCES)
    shares = [SOURCES[s][0] for s in names]
    out = []
    for source in rng.choices(names, shares, k=count):
        types = SOURCES[source][1]
        weights = [WEIGHTS.get(t, 1.0) for t in types]
        out.append((source, rng.choices(types, weights)[0]))
    return out


def seed_events(conn: sqlite3.Connection, n: Sizes, rng: random.Random) -> None:
    kinds = _event_kinds(rng, n.events)
    ages = sorted((rng.random() * WEEK for _ in range(n.events)), reverse=True)

    def rows() -> Iterator[tuple[Any, ...]]:
        for i, ((source, type_), age) in enumerate(zip(kinds, ages, strict=True), start=1):
            contact = rng.randint(1, n.contacts)
            at = ts(age)
            failed = rng.random() < 0.0005
            canonical = {"type": type_, "contact": {"email": f"contact{contact}@example.com"}}
            yield (
                i,
                source,
                type_,
                f"{source}:seed-{i}",
                contact % 64,
                "failed" if failed else "processed",
                5 if failed else 1,
                at,
                f"email:contact{contact}@example.com",
                contact,
                None,
                "application/json",
                orjson.dumps(canonical).decode(),
                at,
                at,
                at,
                "step exploded" if failed else None,
                0,
            )

    insert(
        conn,
        "events",
        "id, source, type, dedupe_key, partition, status, attempts, available_at, contact_key, "
        "contact_id, raw, content_type, canonical, received_at, occurred_at, processed_at, "
        "error, depth",
        rows(),
    )


JOB_KINDS = ["send_email", "sequence_step", "webhook", "send_sms", "notion_sync", "rule_action"]


def seed_jobs(conn: sqlite3.Connection, n: Sizes, rng: random.Random) -> None:
    # Mostly history; the rest waiting in the future, due and late, running, dead, cancelled.
    states = rng.choices(
        ["done", "scheduled", "late", "running", "dead", "cancelled"],
        [0.86, 0.10, 0.002, 0.0002, 0.0015, 0.0363],
        k=n.jobs,
    )

    def rows() -> Iterator[tuple[Any, ...]]:
        for i, state in enumerate(states, start=1):
            kind = rng.choice(JOB_KINDS)
            contact = rng.randint(1, n.contacts)
            created = rng.random() * WEEK
            status, run_at, lease, error, attempts = state, ts(created - 60), None, None, 1
            if state == "scheduled":
                run_at = ts(-rng.random() * 30 * 86400)  # up to a month ahead
                attempts = 0
            elif state == "late":
                status, run_at, attempts = "scheduled", ts(rng.random() * 600), 0
            elif state == "running":
                lease = ts(-30)
            elif state == "dead":
                error, attempts = "provider said: 503 Service Unavailable", 5
            yield (
                i,
                kind,
                f"seed:{kind}:{i}",
                status,
                run_at,
                attempts,
                lease,
                orjson.dumps({"contact_id": contact, "template": "thank_you"}).decode(),
                error,
                contact,
                ts(created),
                ts(max(created - 60, 0)),
            )

    insert(
        conn,
        "jobs",
        "id, kind, key, status, run_at, attempts, lease_until, payload, last_error, contact_id, "
        "created_at, updated_at",
        rows(),
    )


def seed_messages(conn: sqlite3.Connection, n: Sizes, rng: random.Random) -> None:
    def rows() -> Iterator[tuple[Any, ...]]:
        for i in range(1, n.messages + 1):
            contact = rng.randint(1, n.contacts)
            sent = rng.random() * WEEK
            yield (
                i,
                f"seed-message:{i}",
                "email",
                "brevo",
                "sent",
                contact,
                f"contact{contact}@example.com",
                "thank_you",
                "Thank you",
                0,
                1,
                ts(sent),
                ts(sent),
                ts(sent),
            )

    insert(
        conn,
        "messages",
        "id, key, channel, provider, status, contact_id, to_address, template, subject, "
        "transactional, attempts, created_at, updated_at, sent_at",
        rows(),
    )


def seed_rollups(conn: sqlite3.Connection, n: Sizes, rng: random.Random) -> None:
    """What the running service would have counted for the seeded events, plus rejections."""
    hour = "substr(received_at, 1, 13) || ':00:00.000000'"
    conn.execute(
        f"INSERT INTO intake_counts (bucket, source, metric, count, last_at) "
        f"SELECT {hour}, source, 'event:' || type, count(*), max(received_at) FROM events "
        f"GROUP BY 1, 2, 3"
    )
    conn.execute(
        f"INSERT INTO intake_counts (bucket, source, metric, count, last_at) "
        f"SELECT {hour}, source, 'delivery:accepted', count(*), max(received_at) FROM events "
        f"GROUP BY 1, 2"
    )
    reasons = ["bad_signature", "stale_timestamp", "schema_error"]
    rows = []
    for h in range(7 * 24):
        for source in ("brevo", "stripe"):
            if rng.random() < 0.2:
                at = NOW - timedelta(hours=h)
                bucket = at.replace(minute=0, second=0, microsecond=0)
                rows.append(
                    (
                        ts((NOW - bucket).total_seconds()),
                        source,
                        "rejected:" + rng.choice(reasons),
                        rng.randint(1, 20),
                        ts(h * 3600),
                    )
                )
    conn.executemany(
        "INSERT OR IGNORE INTO intake_counts (bucket, source, metric, count, last_at) "
        "VALUES (?, ?, ?, ?, ?)",
        rows,
    )


def seed_inbox(conn: sqlite3.Connection, n: Sizes, rng: random.Random) -> None:
    def rows() -> Iterator[tuple[Any, ...]]:
        for i in range(1, 5001):
            source = rng.choice(list(SOURCES))
            rejected = rng.random() < 0.1
            event = rng.randint(1, n.events)
            yield (
                i,
                ts((5000 - i) * 10),
                source,
                f"/webhooks/{source}",
                "rejected" if rejected else "accepted",
                "bad_signature" if rejected else None,
                401 if rejected else 202,
                "signature does not match" if rejected else None,
                "[]" if rejected else f"[{event}]",
                '{\n  "event": "delivered"\n}' if rejected else None,
                '{"content-type": "application/json"}',
                "203.0.113.7",
            )

    insert(
        conn,
        "inbox_deliveries",
        "id, at, source, route, outcome, reason, status_code, detail, event_ids, payload, "
        "headers, client_addr",
        rows(),
    )


CHRISTMAS = [f"email-{i}" for i in range(1, 8)]
ENDS = ["event booking.created", "event purchase.completed", "event email.unsubscribed"]


def seed_sequences(conn: sqlite3.Connection, n: Sizes, rng: random.Random) -> None:
    """A third of the contacts enrolled in the Christmas sequence (7 steps each), the sent
    steps' messages with opens and clicks: the Sequences funnel and the contact pages."""
    people = rng.sample(range(1, n.contacts + 1), n.contacts // 3)
    enrollments, steps, messages = [], [], []
    message_id = n.messages
    for eid, contact in enumerate(people, start=1):
        age = rng.random() * 12 * 86400
        sent = min(7, int(age // (2 * 86400)) + 1)
        status, reason, ended = "active", None, None
        if rng.random() < 0.2:
            status, reason, ended = "exited", rng.choice(ENDS), ts(age / 2)
        elif sent == 7:
            status, reason, ended = "completed", "every step ran or was skipped", ts(0)
        enrollments.append(
            (
                eid,
                "christmas-2025",
                f"contact:{contact}",
                contact,
                status,
                ts(age),
                ts(age),
                ended,
                reason,
                None,
                None,
                0,
            )
        )
        for pos, step in enumerate(CHRISTMAS):
            done = pos < sent
            st = "sent" if done else ("scheduled" if status == "active" else "cancelled")
            due = ts(age - pos * 2 * 86400)
            steps.append(
                (
                    eid,
                    step,
                    pos,
                    st,
                    due,
                    due if done else None,
                    due if done else None,
                    f"christmas_{step}" if done else None,
                    None,
                    due,
                )
            )
            if done:
                message_id += 1
                opened = rng.random() < 0.45
                messages.append(
                    (
                        message_id,
                        f"seq:{eid}:{step}",
                        "email",
                        "brevo",
                        "sent",
                        contact,
                        f"contact{contact}@example.com",
                        f"christmas_{step}",
                        "Christmas",
                        0,
                        1,
                        due,
                        due,
                        due,
                        eid,
                        step,
                        due if opened else None,
                        due if opened and rng.random() < 0.3 else None,
                    )
                )
    insert(
        conn,
        "enrollments",
        "id, sequence_id, key, contact_id, status, anchor_at, "
        "enrolled_at, ended_at, end_reason, event_id, rule_id, reschedules",
        iter(enrollments),
    )
    insert(
        conn,
        "enrollment_steps",
        "enrollment_id, step_id, position, status, due_at, ran_at, "
        "sent_at, template, reason, updated_at",
        iter(steps),
    )
    insert(
        conn,
        "messages",
        "id, key, channel, provider, status, contact_id, to_address, "
        "template, subject, transactional, attempts, created_at, updated_at, sent_at, "
        "enrollment_id, step_id, opened_at, clicked_at",
        iter(messages),
    )


RULES = ["email-opened", "email-clicked", "email-bounced", "purchase", "high-score"]


def seed_rule_fires(conn: sqlite3.Connection, n: Sizes, rng: random.Random) -> None:
    """A ``rule.fired`` timeline note for a third of the events (a week of them), and an
    ``event`` note for as many: the Rules page's counts read only the first kind."""
    count = n.events // 3

    def rows() -> Iterator[tuple[Any, ...]]:
        for i in range(count):
            contact = rng.randint(1, n.contacts)
            at = ts(rng.random() * WEEK)
            event = rng.randint(1, n.events)
            yield (contact, event, at, "event", None, "{}")
            if i % 1000:  # one rule is rare
                yield (contact, event, at, "rule.fired", rng.choice(RULES[:-1]), "{}")
            else:
                yield (contact, event, at, "rule.fired", RULES[-1], "{}")

    insert(conn, "timeline", "contact_id, event_id, at, kind, rule_id, detail", rows())


Seeder = Callable[[sqlite3.Connection, Sizes, random.Random], None]
SEEDERS: list[Seeder] = [
    seed_contacts,
    seed_events,
    seed_jobs,
    seed_messages,
    seed_rollups,
    seed_inbox,
    seed_sequences,
    seed_rule_fires,
]


def seed(path: Path, sizes: Sizes) -> None:
    db = Database(f"sqlite:///{path}")
    migrate.upgrade(db)
    users.create_user(db, name=ADMIN[0], role="admin", password=ADMIN[1], now=NOW, actor="bench")
    db.dispose()
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=OFF")
    conn.execute("PRAGMA cache_size=-200000")
    rng = random.Random(13)
    for seeder in SEEDERS:
        start = time.perf_counter()
        conn.execute("BEGIN")
        seeder(conn, sizes, rng)
        conn.execute("COMMIT")
        print(f"  {seeder.__name__:<16} {time.perf_counter() - start:6.1f} s", flush=True)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()


def table(rows: list[list[str]], head: list[str]) -> str:
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    line = lambda r: "| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |"  # noqa: E731
    sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(head), sep, *(line(r) for r in rows)])


def time_pages(path: Path, requests: int) -> list[list[str]]:
    from starlette.testclient import TestClient

    from nurture.web.app import create_app

    container = build_container(
        Settings(database_url=f"sqlite:///{path}", secret_key="bench-secret-key")
    )
    app = create_app(container, access_log=False)
    rows: list[list[str]] = []
    with TestClient(app) as client:
        login = client.get("/console/login").text
        token = re.search(r'name="csrf" value="([^"]+)"', login)
        assert token
        r = client.post(
            "/console/login",
            data={"name": ADMIN[0], "password": ADMIN[1], "csrf": token.group(1)},
            follow_redirects=False,
        )
        assert r.status_code == 303, r.text
        with container.db.read() as conn:
            from sqlalchemy import text

            dead_job = conn.execute(text("SELECT max(id) FROM jobs WHERE status = 'dead'")).scalar()
            delivery = conn.execute(text("SELECT max(id) FROM inbox_deliveries")).scalar()
            contact = conn.execute(text("SELECT max(contact_id) FROM enrollments")).scalar()
        ids = {"dead_job": dead_job, "delivery": delivery, "contact": contact or 1}
        # A no-op baseline through the same client: the in-process overhead of one request.
        noop, noop_cpu = [], []
        for _ in range(requests):
            start, cpu = time.perf_counter(), time.process_time()
            client.get("/healthz")
            noop.append((time.perf_counter() - start) * 1000)
            noop_cpu.append((time.process_time() - cpu) * 1000)
        rows.append(_row("baseline: GET /healthz", noop, noop_cpu, None))
        for page in PAGES:
            url = page.path.format(**ids)
            first_start = time.perf_counter()
            first = client.get(url)
            first_ms = (time.perf_counter() - first_start) * 1000
            assert first.status_code == 200, (url, first.status_code, first.text[:300])
            if "sequences/" in page.path:
                ready = _ready(client, url, "Counting this sequence")
                print(f"  {page.name}: counted {ready:.1f} s after the first view")
            times, cpus = [], []
            for _ in range(requests):
                start, cpu = time.perf_counter(), time.process_time()
                response = client.get(url)
                times.append((time.perf_counter() - start) * 1000)
                cpus.append((time.process_time() - cpu) * 1000)
                assert response.status_code == 200
            rows.append(_row(page.name, times, cpus, page.budget_ms, first_ms))
            if page.path == "/console/jobs":
                print(f"  job counts ready {_counts_ready(client):.1f} s after the first view")
    container.close()
    return rows


def _counts_ready(client: Any) -> float:
    """The Jobs page counts every job in the background once; wait for it before timing."""
    start = time.perf_counter()
    while "Counting every job" in client.get("/console/jobs").text:
        time.sleep(0.2)
    return time.perf_counter() - start


def _ready(client: Any, url: str, counting: str) -> float:
    """A page whose numbers are counted in the background: wait for them before timing."""
    start = time.perf_counter()
    while counting in client.get(url).text:
        time.sleep(0.2)
    return time.perf_counter() - start


def _row(
    name: str, times: list[float], cpus: list[float], budget: float | None, first: float = 0.0
) -> list[str]:
    times = sorted(times)
    p95 = times[min(len(times) - 1, int(len(times) * 0.95))]
    verdict = "" if budget is None else ("ok" if p95 < budget else "OVER")
    return [
        name,
        f"{first:.1f}" if first else "",
        f"{statistics.median(times):.1f}",
        f"{p95:.1f}",
        f"{times[-1]:.1f}",
        f"{statistics.median(cpus):.1f}",
        "" if budget is None else f"{budget:.0f}",
        verdict,
    ]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--contacts", type=int, default=100_000)
    p.add_argument("--events", type=int, default=1_000_000)
    p.add_argument("--jobs", type=int, default=1_000_000)
    p.add_argument("--messages", type=int, default=200_000)
    p.add_argument("--requests", type=int, default=40)
    p.add_argument("--db", type=Path, help="the SQLite file to seed (reused when it exists)")
    p.add_argument("--keep", action="store_true", help="keep the --db file afterwards")
    p.add_argument(
        "--ingest",
        action="store_true",
        help="instead: bench/ingest.py (SQLite, /webhooks/track) without the intake counting, "
        "with it, and with the console's overview polled every 5 s; prints the ratios",
    )
    p.add_argument("--rounds", type=int, default=2, help="--ingest: runs of each variant")
    args = p.parse_args()
    if args.ingest:
        ingest_ratio(args.rounds)
        return
    sizes = Sizes(args.contacts, args.events, args.jobs, args.messages)
    with tempfile.TemporaryDirectory() as tmp:
        path = args.db or Path(tmp) / "console.db"
        if not path.exists():
            print(f"seeding {path}: {sizes}", flush=True)
            seed(path, sizes)
        rows = time_pages(path, args.requests)
        if args.db and not args.keep:
            path.unlink()
    print(
        f"\nconsole pages, SQLite, {sizes.contacts:,} contacts, {sizes.events:,} events, "
        f"{sizes.jobs:,} jobs, {sizes.messages:,} messages; {args.requests} views each after one "
        "first view; server time in process (ASGI), ms"
    )
    print(table(rows, ["page", "first view", "p50", "p95", "max", "CPU p50", "budget p95", ""]))
    print(
        "first view: the page's first request (Jobs then counts every job by kind and state in "
        "the background, at most once a minute). CPU p50: the process's CPU time per view, which "
        f"a busy machine inflates less than wall time (load average now {_load()}). Compare "
        "with the baseline row."
    )


INGEST_VARIANTS = {
    "no intake counting (BENCH_NO_TALLY)": {"BENCH_NO_TALLY": "1"},
    "intake counting, console closed": {},
    "intake counting, overview polled every 5 s": {"BENCH_CONSOLE_POLL": "5"},
}


def _ingest_once(env: dict[str, str]) -> tuple[float, float]:
    """req/s and server CPU us/req of /webhooks/track in one bench/ingest.py run."""
    import os
    import subprocess

    out = subprocess.run(
        [
            sys.executable,
            str(ROOT / "bench" / "ingest.py"),
            "--no-pg",
            "--no-drain",
            "--seconds",
            "10",
        ],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    for line in out.splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if len(cells) > 7 and cells[0] == "SQLite" and not cells[1].startswith(("bare", "no-op")):
            return float(cells[2].replace(",", "")), float(cells[7])
    raise RuntimeError(f"no track row in bench/ingest.py output:\n{out}")


def ingest_ratio(rounds: int) -> None:
    results: dict[str, list[tuple[float, float]]] = {name: [] for name in INGEST_VARIANTS}
    for round_ in range(rounds):  # interleaved, so drift of the machine hits every variant
        for name, env in INGEST_VARIANTS.items():
            results[name].append(_ingest_once(env))
            print(f"  round {round_ + 1}: {name}: {results[name][-1]}", flush=True)
    base_rps = statistics.median(r for r, _ in results[next(iter(INGEST_VARIANTS))])
    base_cpu = statistics.median(c for _, c in results[next(iter(INGEST_VARIANTS))])
    rows = []
    for name, found in results.items():
        rps = statistics.median(r for r, _ in found)
        cpu = statistics.median(c for _, c in found)
        rows.append(
            [name, f"{rps:,.0f}", f"{rps / base_rps:.2f}x", f"{cpu:.0f}", f"{cpu / base_cpu:.2f}x"]
        )
    print(
        f"\ningest with the console, SQLite, /webhooks/track, 32 connections, 10 s, median of "
        f"{rounds} interleaved runs (load average {_load()})"
    )
    print(table(rows, ["server", "req/s", "vs none", "CPU us/req", "vs none"]))


def _load() -> str:
    try:
        return Path("/proc/loadavg").read_text().split()[0]
    except OSError:
        return "unknown"


if __name__ == "__main__":
    main()
