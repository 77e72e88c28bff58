"""Ingest benchmark: durable ``POST /webhooks/track`` against a bare no-op route, same server.

Load comes from ``wrk`` (a separate process; ``apt-get install wrk``) at 32 connections, replaying
pre-signed Standard Webhooks requests (each a distinct event, so every request is a real insert
with a real signature check). Then one worker drains what was ingested.

    .venv/bin/python bench/ingest.py [--seconds 10] [--connections 32] [--pg URL] [--no-pg]

Prints a table; figures depend on the disk's flush rate (SQLite synchronous=FULL).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

LUA = r"""
local reqs = {}
local n = 0
local idx = 0
local step = 1
local threads = 0
setup = function(thread)
  thread:set("tid", threads)
  threads = threads + 1
end
init = function(args)
  local f = assert(io.open(args[1], "r"))
  for line in f:lines() do
    local head, body = line:match("([^\t]*)\t(.*)")
    local headers = {}
    for pair in head:gmatch("[^\031]+") do
      local name, value = pair:match("([^:]+): (.*)")
      headers[name] = value
    end
    n = n + 1
    reqs[n] = wrk.format("POST", args[2], headers, body)
  end
  f:close()
  -- Threads interleave over the file so no request is sent twice.
  step = tonumber(args[3]) or 1
  idx = tid or 0
end
request = function()
  idx = idx + step
  if idx > n then idx = idx - n end
  return reqs[idx]
end
done = function(summary, latency, requests)
  io.write(string.format("RESULT %d %d %d %d %d %d\n", summary.requests, summary.duration,
    latency:percentile(50), latency:percentile(99), summary.errors.status,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout))
end
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


SOURCE_SETTINGS = {
    "track": "track_secret",
    "brevo": "brevo_webhook_token",
    "resend": "resend_webhook_secret",
    "calcom": "calcom_webhook_secret",
    "stripe": "stripe_webhook_secret",
    "forms": "forms_secret",
}


def serve(
    url: str, port: int, secrets_json: str, synchronous: str, log_path: str, loop: str
) -> None:
    """Child process: the real app plus two no-op routes, on one uvicorn worker.

    Logging is on, as in production (one JSON line per request), into ``log_path``.
    """
    import asyncio
    import logging

    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route

    from nurture import logs, runtime
    from nurture.bootstrap import build_container
    from nurture.config import Settings
    from nurture.services.ingest import IngestOutcome
    from nurture.storage import migrate
    from nurture.storage.engine import Database
    from nurture.web.app import create_app
    from nurture.web.state import WebState

    async def noop(request: Request) -> Response:
        await request.body()
        return Response(b'{"status":"accepted"}', status_code=202, media_type="application/json")

    async def lean_noop(st: WebState, d: Any) -> IngestOutcome:
        # Same serving path as the webhooks (intake fast path, access log), no verify/parse/commit.
        await d.body(st.container.settings.max_body_bytes)
        return IngestOutcome(accepted=[0])

    secrets = json.loads(secrets_json)
    settings = Settings(
        database_url=url,
        log_level="INFO",
        **{SOURCE_SETTINGS[k]: v for k, v in secrets.items()},
    )
    logs.configure(settings.log_level)
    handler = logging.getLogger().handlers[0]
    assert isinstance(handler, logging.StreamHandler)
    handler.setStream(open(log_path, "a"))  # noqa: SIM115 (lives as long as the process)
    container = build_container(
        settings, db=Database(settings.database_url, synchronous=synchronous)
    )
    migrate.upgrade(container.db)
    app = create_app(container)
    app.router.routes.insert(0, Route("/bench/noop", noop, methods=["POST"]))
    intake = getattr(app, "intake", None)
    if intake is not None:  # absent from trees before it existed (to bench them the same way)
        intake.post("/bench/noop-intake", lean_noop)
    main = runtime.serve(app, "127.0.0.1", port)
    if loop == "asyncio" or not hasattr(runtime, "run"):
        asyncio.run(main)
    else:
        runtime.run(main)
    ingestor = app.state.nurture.ingestor
    stats = {"commits": ingestor.commits, "rows": ingestor.rows_committed}
    Path(log_path + ".stats").write_text(json.dumps(stats))


Builder = Callable[[int, int], tuple[bytes, dict[str, str]]]


def make_requests(path: Path, count: int, build: Builder) -> None:
    """One pre-built request per line: ``name: value\x1fname: value<TAB>body``."""
    now = int(datetime.now(UTC).timestamp())
    with path.open("w") as f:
        for i in range(count):
            body, headers = build(i, now)
            head = "\x1f".join(f"{k}: {v}" for k, v in headers.items())
            f.write(head + "\t" + body.decode() + "\n")


def builders(secrets: dict[str, str], tag: str) -> dict[str, tuple[str, Builder]]:
    """Every source's route and a builder of distinct, validly signed deliveries."""
    from nurture.testing_providers import (
        brevo_request,
        calcom_request,
        resend_request,
        standard_request,
        stripe_request,
    )

    def at(ts: int) -> datetime:
        return datetime.fromtimestamp(ts, UTC)

    def track(i: int, ts: int) -> tuple[bytes, dict[str, str]]:
        payload = {
            "id": f"{tag}-{i}",
            "type": "page.viewed",
            "contact": {"email": f"user{i % 20000}@example.com"},
            "data": {"url": "/pricing", "ref": "bench"},
        }
        return standard_request(secrets["track"], payload, at(ts), msg_id=f"msg_{tag}_{i}")

    def brevo(i: int, ts: int) -> tuple[bytes, dict[str, str]]:
        payload = {
            "event": "click",
            "email": f"user{i % 20000}@example.com",
            "id": 1,
            "message-id": f"<{tag}.{i}@smtp-relay.mailin.fr>",
            "ts_epoch": ts * 1000 + i,
            "link": "https://shop.example/p",
            "subject": "Hello",
            "tags": ["bench"],
        }
        return brevo_request(secrets["brevo"], payload)

    def resend(i: int, ts: int) -> tuple[bytes, dict[str, str]]:
        payload = {
            "type": "email.opened",
            "created_at": "2026-11-23T10:00:00.000Z",
            "data": {
                "email_id": f"{tag}-{i}",
                "from": "shop@example.com",
                "to": [f"user{i % 20000}@example.com"],
                "subject": "Hello",
                "created_at": "2026-11-23T09:59:00.000Z",
            },
        }
        return resend_request(secrets["resend"], payload, at(ts), msg_id=f"msg_{tag}_{i}")

    def calcom(i: int, ts: int) -> tuple[bytes, dict[str, str]]:
        payload = {
            "triggerEvent": "BOOKING_CREATED",
            "createdAt": "2026-11-23T10:00:00.000Z",
            "payload": {
                "type": "discovery",
                "title": "Discovery call",
                "startTime": "2026-12-01T15:00:00Z",
                "endTime": "2026-12-01T15:30:00Z",
                "organizer": {
                    "name": "Org",
                    "email": "org@example.com",
                    "timeZone": "Europe/Paris",
                },
                "attendees": [
                    {
                        "name": "Ann Lee",
                        "email": f"user{i % 20000}@example.com",
                        "timeZone": "America/Toronto",
                    }
                ],
                "uid": f"{tag}-{i}",
                "bookingId": i,
            },
        }
        return calcom_request(secrets["calcom"], payload)

    def stripe(i: int, ts: int) -> tuple[bytes, dict[str, str]]:
        payload = {
            "id": f"evt_{tag}_{i}",
            "object": "event",
            "created": ts,
            "type": "checkout.session.completed",
            "data": {
                "object": {
                    "id": f"cs_{tag}_{i}",
                    "object": "checkout.session",
                    "amount_total": 9900,
                    "currency": "eur",
                    "payment_intent": f"pi_{tag}_{i}",
                    "customer_details": {"email": f"user{i % 20000}@example.com"},
                }
            },
        }
        return stripe_request(secrets["stripe"], payload, at(ts))

    def form(i: int, ts: int) -> tuple[bytes, dict[str, str]]:
        payload = {
            "email": f"user{i}@example.com",
            "first_name": "Ann",
            "business_name": "Shop",
            "assessment_score": 55,
            "red_systems": 2,
            "orange_systems": 1,
            "yellow_systems": 3,
            "green_systems": 2,
        }
        return standard_request(secrets["forms"], payload, at(ts), msg_id=f"msg_{tag}_{i}")

    return {
        "track": ("/webhooks/track", track),
        "brevo": ("/webhooks/brevo", brevo),
        "resend": ("/webhooks/resend", resend),
        "calcom": ("/webhooks/calcom", calcom),
        "stripe": ("/webhooks/stripe", stripe),
        "forms": ("/webhooks/forms/christmas-assessment", form),
    }


def run_wrk(url: str, reqfile: Path, lua: Path, seconds: int, conns: int) -> dict[str, float]:
    out = subprocess.run(
        [
            "wrk",
            "-t2",
            f"-c{conns}",
            f"-d{seconds}s",
            "-s",
            str(lua),
            url,
            "--",
            str(reqfile),
            "/" + url.split("/", 3)[3],
            "2",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    line = next(ln for ln in out.splitlines() if ln.startswith("RESULT"))
    reqs, dur_us, p50, p99, bad, errs = (int(x) for x in line.split()[1:])
    return {
        "rps": reqs / (dur_us / 1e6),
        "p50": p50 / 1000,
        "p99": p99 / 1000,
        "non2xx": bad,
        "errors": errs,
        "requests": reqs,
    }


def drain_rate(url: str) -> tuple[int, float, float]:
    from nurture.bootstrap import build_container, build_processor
    from nurture.config import Settings

    container = build_container(Settings(database_url=url))
    processor = build_processor(container)
    start, cpu = time.perf_counter(), time.process_time()
    n = processor.drain()
    elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
    container.close()
    return n, n / elapsed if elapsed else 0.0, n / cpu if cpu else 0.0


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux ``/proc``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def bench_db(
    label: str, url: str, args: argparse.Namespace, workdir: Path, synchronous: str = "FULL"
) -> list[list[str]]:
    from nurture.testing import new_secret

    secrets = {name: new_secret() for name in SOURCE_SETTINGS}
    secrets["brevo"] = "bench-brevo-token-0123456789"
    secrets["calcom"] = "bench-calcom-secret-0123456789"
    port = free_port()
    log_path = workdir / f"server-{port}.log"
    with (workdir / f"server-{port}.err").open("w") as err:
        proc = subprocess.Popen(
            [
                sys.executable,
                __file__,
                "--serve",
                url,
                str(port),
                json.dumps(secrets),
                synchronous,
                str(log_path),
                args.loop,
            ],
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
    base = f"http://127.0.0.1:{port}"
    rows = []
    sent = 0
    try:
        for _ in range(100):
            try:
                httpx.get(base + "/healthz", timeout=1)
                break
            except httpx.HTTPError:
                time.sleep(0.1)
        sent += 1
        lua = workdir / "post.lua"
        lua.write_text(LUA)
        expected = int(args.seconds * 12000)
        routes = builders(secrets, f"{label[:2]}{port}")
        noop_file = workdir / "noop.tsv"
        make_requests(noop_file, min(expected, 50000), routes["track"][1])

        def load(path: str, reqfile: Path) -> dict[str, float]:
            nonlocal sent
            before = cpu_seconds(proc.pid)
            r = run_wrk(base + path, reqfile, lua, args.seconds, args.connections)
            r["cpu_us"] = (cpu_seconds(proc.pid) - before) / max(r["requests"], 1) * 1e6
            sent += int(r["requests"])
            print(f"  {label} {path}: {r['rps']:,.0f} req/s", file=sys.stderr, flush=True)
            return r

        noop = load("/bench/noop", noop_file)
        results = [("bare no-op route (Starlette)", noop)]
        if httpx.post(base + "/bench/noop-intake", content=b"{}").status_code == 202:
            results.append(("no-op on the intake path", load("/bench/noop-intake", noop_file)))
        for name in args.sources:
            path, build = routes[name]
            reqfile = workdir / f"{name}.tsv"
            make_requests(reqfile, expected, build)
            r = load(path, reqfile)
            if r["requests"] >= expected:
                print(f"warning: {label} {name}: requests wrapped around; some were duplicates")
            results.append((f"POST {path}", r))
        for name, r in results:
            rows.append(
                [
                    label,
                    name,
                    f"{r['rps']:,.0f}",
                    f"{r['p50']:.1f}",
                    f"{r['p99']:.1f}",
                    f"{r['rps'] / noop['rps']:.2f}x",
                    f"{r['cpu_us']:.0f}",
                    str(r["non2xx"] + r["errors"]),
                ]
            )
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    # wrk counts the requests it completed; ones cut off at the end may still be logged.
    lines = sum(1 for _ in log_path.open()) if log_path.exists() else 0
    print(f"  {label}: {lines:,} access-log lines for {sent:,} requests", file=sys.stderr)
    stats_path = Path(str(log_path) + ".stats")
    if stats_path.exists():
        stats = json.loads(stats_path.read_text())
        per = stats["rows"] / stats["commits"] if stats["commits"] else 0
        print(f"  {label}: {stats['commits']:,} commits, {per:.1f} rows each", file=sys.stderr)
    print(f"  {label}: draining", file=sys.stderr, flush=True)
    n, rate, per_cpu = drain_rate(url)
    rows.append(
        [
            label,
            f"one worker drains {n:,} events",
            f"{rate:,.0f} ev/s",
            "",
            "",
            "",
            f"{1e6 / per_cpu:.0f}/ev" if per_cpu else "",
            "",
        ]
    )
    return rows


def pg_database(base: str) -> tuple[str, str]:
    from sqlalchemy import create_engine, text

    from nurture.config import normalise_database_url

    base = normalise_database_url(base)
    name = f"nurture_bench_{os.getpid()}"
    eng = create_engine(base, isolation_level="AUTOCOMMIT")
    with eng.connect() as c:
        c.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
        c.execute(text(f'CREATE DATABASE "{name}"'))
    eng.dispose()
    return base.rsplit("/", 1)[0] + "/" + name, name


def drop_pg(base: str, name: str) -> None:
    from sqlalchemy import create_engine, text

    from nurture.config import normalise_database_url

    eng = create_engine(normalise_database_url(base), isolation_level="AUTOCOMMIT")
    with eng.connect() as c:
        c.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    eng.dispose()


def table(rows: list[list[str]], head: list[str]) -> str:
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    line = lambda r: "| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |"  # noqa: E731
    sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(head), sep, *(line(r) for r in rows)])


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--serve":
        url, port, secrets, synchronous, log_path, loop = sys.argv[2:8]
        serve(url, int(port), secrets, synchronous, log_path, loop)
        return
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=int, default=10)
    p.add_argument("--connections", type=int, default=32)
    p.add_argument(
        "--pg",
        default=os.environ.get("NURTURE_BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432/test"),
    )
    p.add_argument("--no-pg", action="store_true")
    p.add_argument("--no-sqlite", action="store_true")
    p.add_argument(
        "--sources",
        nargs="+",
        default=["track"],
        choices=list(SOURCE_SETTINGS),
        help="routes to load (default: track)",
    )
    p.add_argument(
        "--compare-normal",
        action="store_true",
        help="also run SQLite with synchronous=NORMAL to show what durability costs",
    )
    p.add_argument(
        "--loop",
        choices=["auto", "asyncio"],
        default="auto",
        help="event loop of the server: auto = uvloop when installed, as nurture serve runs",
    )
    args = p.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is needed as the load generator: apt-get install wrk")
    rows: list[list[str]] = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        if not args.no_sqlite:
            rows += bench_db("SQLite", f"sqlite:///{work / 'bench.db'}", args, work)
        if args.compare_normal:
            # What durability costs: the same run with synchronous=NORMAL, which can lose the
            # last acknowledged events on a power cut. nurture never runs like this.
            rows += bench_db(
                "SQLite (NORMAL, not durable)",
                f"sqlite:///{work / 'normal.db'}",
                args,
                work,
                synchronous="NORMAL",
            )
        if not args.no_pg:
            url, name = pg_database(args.pg)
            try:
                rows += bench_db("PostgreSQL", url, args, work)
            finally:
                drop_pg(args.pg, name)
    print(f"\ningest, {args.connections} connections, {args.seconds} s each, one uvicorn worker")
    head = ["db", "target", "req/s", "p50 ms", "p99 ms", "vs no-op", "CPU us/req", "errors"]
    print(table(rows, head))
    print(
        "vs no-op: against the bare Starlette route; CPU us/req: the server process's CPU time"
        " per answered request (less sensitive to other load on the machine than req/s)"
    )


if __name__ == "__main__":
    main()
