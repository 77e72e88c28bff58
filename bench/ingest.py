"""Ingest benchmark: durable ``POST /webhooks/<source>`` against bare no-op routes, same server.

Load comes from ``wrk`` (a separate process; ``apt-get install wrk``) at 32 connections, replaying
pre-signed requests (each a distinct event, so every request is a real insert with a real
signature check). The server is ``nurture serve``'s: one uvicorn worker on uvloop, access log on
(one JSON line per request, into a file). Each route runs against a fresh database; then one
worker with the default pack drains what that route stored.

    .venv/bin/python bench/ingest.py [--seconds 10] [--connections 32] [--pg URL] [--no-pg]
        [--sources track brevo resend calcom stripe forms] [--compare-normal] [--no-drain]

Prints a table; figures depend on the disk's flush rate (SQLite synchronous=FULL) and, on a
shared machine, on its other load: compare the CPU us/req column across runs too.

``BENCH_TRACE=1`` also reports, per route, the slowest group commits (when in the run, how long,
how many requests shared them) and event-loop stalls over 10 ms: it tells a slow disk flush (a
commit of 50-150 ms; this VM's disk has such episodes) from a blocked event loop when p99 jumps.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
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
    from nurture.database import migrate
    from nurture.database.engine import Database
    from nurture.intake.ingest import IngestOutcome
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
    if os.environ.get("BENCH_CONSOLE_POLL"):
        from nurture.accounts import users

        users.create_user(
            container.db,
            name=CONSOLE_USER[0],
            role="viewer",
            password=CONSOLE_USER[1],
            now=datetime.now(UTC),
            actor="bench",
        )
    app = create_app(container)
    if os.environ.get("BENCH_NO_TALLY"):
        # What the console's intake counting costs: the same server without it.
        app.state.nurture.tally = None
        app.state.nurture.ingestor.tally = None
    app.router.routes.insert(0, Route("/bench/noop", noop, methods=["POST"]))
    intake = getattr(app, "intake", None)
    if intake is not None:  # absent from trees before it existed (to bench them the same way)
        intake.post("/bench/noop-intake", lean_noop)
    pauses: dict[int, list[float]] = {0: [], 1: [], 2: []}
    started: list[float] = [0.0]

    def on_gc(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            started[0] = time.perf_counter()
        else:
            pauses[info["generation"]].append(time.perf_counter() - started[0])

    # As runtime.serve does at start; done here first so that its collection of start-up
    # objects is not counted as a pause under load.
    gc.collect()
    gc.freeze()
    gc.callbacks.append(on_gc)
    slow: list[tuple[float, float, int]] = []
    if os.environ.get("BENCH_TRACE"):
        ingestor_ = app.state.nurture.ingestor
        commit = ingestor_._commit

        def traced(group: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return commit(group)
            finally:
                slow.append((t0, time.perf_counter() - t0, len(group)))

        ingestor_._commit = traced
    main = runtime.serve(app, "127.0.0.1", port)
    lags: list[tuple[float, float]] = []
    if os.environ.get("BENCH_TRACE"):
        served = main

        async def lag_probe() -> None:
            while True:
                t0 = time.perf_counter()
                await asyncio.sleep(0.001)
                lag = time.perf_counter() - t0 - 0.001
                if lag > 0.01:
                    lags.append((t0, lag))

        async def traced_main() -> None:
            probe = asyncio.ensure_future(lag_probe())
            try:
                await served
            finally:
                probe.cancel()

        main = traced_main()
    if loop == "asyncio" or not hasattr(runtime, "run"):
        asyncio.run(main)
    else:
        runtime.run(main)
    ingestor = app.state.nurture.ingestor
    stats = {"commits": ingestor.commits, "rows": ingestor.rows_committed}
    if os.environ.get("BENCH_TRACE"):
        from collections import Counter

        kinds = Counter(type(o).__name__ for o in gc.get_objects())
        stats["tracked_objects"] = sum(kinds.values())
        stats["top_types"] = kinds.most_common(8)
    if lags:
        stats["loop_lags_over_10ms"] = len(lags)
        stats["loop_lag_worst_ms"] = sorted(round(x[1] * 1000, 1) for x in lags)[-8:]
    if slow:
        t_first = slow[0][0]
        worst = sorted(slow, key=lambda x: -x[1])[:15]
        stats["slow_commits"] = [
            (round(t - t_first, 3), round(d * 1000, 1), n) for t, d, n in worst
        ]
    for gen, times in pauses.items():
        stats[f"gc{gen}_n"] = len(times)
        stats[f"gc{gen}_max_ms"] = round(max(times, default=0) * 1000, 1)
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
    from nurture.testing import (
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


def drain_rate(url: str, budget: float) -> tuple[int, bool, float, float]:
    """One worker processes batches for up to ``budget`` seconds (all of them if sooner done).

    Returns (events processed, whether it got through all, events/s, events per CPU-second).
    """
    from nurture.bootstrap import build_container, build_processor
    from nurture.config import Settings

    container = build_container(Settings(database_url=url))
    processor = build_processor(container)
    start, cpu = time.perf_counter(), time.process_time()
    n, done = 0, False
    while time.perf_counter() - start < budget:
        batch = processor.run_once().total
        if batch == 0:
            done = True
            break
        n += batch
    elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
    container.close()
    return n, done, n / elapsed if elapsed else 0.0, n / cpu if cpu else 0.0


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux ``/proc``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


CONSOLE_USER = ("bench-viewer", "bench-viewer-password")


def poll_console(base: str, every: float, stop: threading.Event) -> None:
    """Someone with the console's overview open: log in, then load the overview every
    ``every`` seconds (BENCH_CONSOLE_POLL) while the load runs."""
    import re

    with httpx.Client(base_url=base, timeout=30) as client:
        page = client.get("/console/login").text
        token = re.search(r'name="csrf" value="([^"]+)"', page)
        assert token, "no console login form"
        client.post(
            "/console/login",
            data={"name": CONSOLE_USER[0], "password": CONSOLE_USER[1], "csrf": token.group(1)},
        )
        while not stop.is_set():
            assert client.get("/console").status_code == 200
            stop.wait(every)


class Server:
    """One ``--serve`` child process on a database, and what it reports when stopped."""

    def __init__(
        self, url: str, secrets: dict[str, str], workdir: Path, args: argparse.Namespace, sync: str
    ) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log_path = workdir / f"server-{self.port}.log"
        command = [sys.executable, __file__, "--serve", url, str(self.port), json.dumps(secrets)]
        command += [sync, str(self.log_path), args.loop]
        with (workdir / f"server-{self.port}.err").open("w") as err:
            self.proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=err)
        for _ in range(200):
            try:
                httpx.get(self.base + "/healthz", timeout=1)
                break
            except httpx.HTTPError:
                time.sleep(0.1)
        self.sent = 1

    def load(
        self, path: str, reqfile: Path, lua: Path, args: argparse.Namespace
    ) -> dict[str, float]:
        poll = float(os.environ.get("BENCH_CONSOLE_POLL") or 0)
        stop = threading.Event()
        poller = threading.Thread(target=poll_console, args=(self.base, poll, stop), daemon=True)
        if poll and path != "/bench/noop":
            poller.start()
        before = cpu_seconds(self.proc.pid)
        try:
            r = run_wrk(self.base + path, reqfile, lua, args.seconds, args.connections)
        finally:
            stop.set()
            if poller.is_alive():
                poller.join()
        r["cpu_us"] = (cpu_seconds(self.proc.pid) - before) / max(r["requests"], 1) * 1e6
        self.sent += int(r["requests"])
        return r

    def stop(self) -> dict[str, float]:
        self.proc.terminate()
        self.proc.wait(timeout=60)
        # wrk counts the requests it completed; ones cut off at the end may still be logged.
        lines = sum(1 for _ in self.log_path.open()) if self.log_path.exists() else 0
        stats = {"log_lines": lines, "sent": self.sent, "commits": 0, "rows": 0}
        stats_path = Path(str(self.log_path) + ".stats")
        if stats_path.exists():
            stats.update(json.loads(stats_path.read_text()))
        return stats


# A fresh, migrated database for one route: (url, drop it).
NewDatabase = Callable[[str], tuple[str, Callable[[], None]]]


def bench_db(
    label: str,
    new_database: NewDatabase,
    args: argparse.Namespace,
    workdir: Path,
    synchronous: str = "FULL",
) -> list[list[str]]:
    """Each route on a fresh database and server (an inbox already holding the previous routes'
    events would make every later route look slower), then one worker drains that database."""
    from nurture.testing import new_secret

    secrets = {name: new_secret() for name in SOURCE_SETTINGS}
    secrets["brevo"] = "bench-brevo-token-0123456789"
    secrets["calcom"] = "bench-calcom-secret-0123456789"
    lua = workdir / "post.lua"
    lua.write_text(LUA)
    expected = int(args.seconds * 12000)
    routes = builders(secrets, f"{label[:2]}{os.getpid()}")
    rows: list[list[str]] = []
    noop_rps = track_rps = 0.0

    def row(
        name: str, r: dict[str, float], vs_track: str = "", per_commit: str = "", drained: str = ""
    ) -> list[str]:
        return [
            label,
            name,
            f"{r['rps']:,.0f}",
            f"{r['p50']:.1f}",
            f"{r['p99']:.1f}",
            f"{r['rps'] / noop_rps:.2f}x",
            vs_track,
            f"{r['cpu_us']:.0f}",
            per_commit,
            str(int(r["non2xx"] + r["errors"])),
            drained,
        ]

    for index, name in enumerate(args.sources):
        path, build = routes[name]
        url, drop = new_database(name)
        try:
            server = Server(url, secrets, workdir, args, synchronous)
            try:
                if index == 0:
                    noop_file = workdir / "noop.tsv"
                    make_requests(noop_file, min(expected, 50000), routes["track"][1])
                    noop = server.load("/bench/noop", noop_file, lua, args)
                    noop_rps = noop["rps"]
                    rows.append(row("bare no-op route (Starlette)", noop))
                    if httpx.post(server.base + "/bench/noop-intake", content=b"{}").is_success:
                        lean = server.load("/bench/noop-intake", noop_file, lua, args)
                        rows.append(row("no-op on the intake path", lean))
                reqfile = workdir / f"{name}.tsv"
                make_requests(reqfile, expected, build)
                r = server.load(path, reqfile, lua, args)
            finally:
                stats = server.stop()
            if r["requests"] >= expected:
                print(f"warning: {label} {name}: requests wrapped around; some were duplicates")
            print(
                f"  {label} {path}: {r['rps']:,.0f} req/s; {stats['log_lines']:,} log lines for"
                f" {stats['sent']:,} requests; {stats['commits']:,} commits; gc gen2"
                f" {stats.get('gc2_n', 0)}x, longest {stats.get('gc2_max_ms', 0)} ms"
                + (
                    f"; slowest commits (s into run, ms, requests): {stats['slow_commits'][:5]};"
                    f" loop stalls > 10 ms: {stats.get('loop_lags_over_10ms', 0)},"
                    f" worst {stats.get('loop_lag_worst_ms', [])[-3:]}"
                    if "slow_commits" in stats
                    else ""
                ),
                file=sys.stderr,
                flush=True,
            )
            track_rps = track_rps or (r["rps"] if name == "track" else 0.0)
            vs_track = f"{r['rps'] / track_rps:.2f}x" if track_rps else ""
            per_commit = f"{stats['rows'] / stats['commits']:.1f}" if stats["commits"] else ""
            drained = ""
            if not args.no_drain:
                n, done, rate, per_cpu = drain_rate(url, args.drain_seconds)
                scope = "all" if done else f"first {args.drain_seconds:.0f} s"
                drained = f"{rate:,.0f} ({scope}: {n:,} ev, {1e6 / per_cpu:.0f} us CPU/ev)"
            rows.append(row(f"POST {path}", r, vs_track, per_commit, drained))
            FIGURES.setdefault(label, {})[path] = (r["rps"], noop_rps)
        finally:
            drop()
    return rows


# ``{database label: {route: (req/s, its server's bare no-op req/s)}}``, for the ratios.
FIGURES: dict[str, dict[str, tuple[float, float]]] = {}


def ratios() -> list[str]:
    """PostgreSQL against SQLite per route, measured in the same run: durable ingest as a share
    of the bare route on the same server (what the database costs), and raw req/s."""
    sqlite, pg = FIGURES.get("SQLite", {}), FIGURES.get("PostgreSQL", {})
    out = []
    for path in [p for p in sqlite if p in pg]:
        (s_rps, s_noop), (p_rps, p_noop) = sqlite[path], pg[path]
        share = (p_rps / p_noop) / (s_rps / s_noop)
        out.append(
            f"  POST {path}: vs no-op PostgreSQL {p_rps / p_noop:.2f}x / SQLite"
            f" {s_rps / s_noop:.2f}x = {share:.2f}"
            f" ({'meets' if share >= 0.5 else 'misses'} the 0.50 target);"
            f" req/s {p_rps:,.0f} / {s_rps:,.0f} = {p_rps / s_rps:.2f}"
        )
    return out


def sqlite_databases(workdir: Path, label: str) -> NewDatabase:
    def new(name: str) -> tuple[str, Callable[[], None]]:
        stem = f"{label}-{name}.db"

        def drop() -> None:
            for path in workdir.glob(stem + "*"):  # the database, its -wal and -shm
                path.unlink(missing_ok=True)

        return f"sqlite:///{workdir / stem}", drop

    return new


def pg_databases(base: str) -> NewDatabase:
    def new(name: str) -> tuple[str, Callable[[], None]]:
        url, db_name = pg_database(base, name)
        return url, lambda: drop_pg(base, db_name)

    return new


def pg_database(base: str, suffix: str = "") -> tuple[str, str]:
    from sqlalchemy import create_engine, text

    from nurture.config import normalise_database_url

    base = normalise_database_url(base)
    name = f"nurture_bench_{os.getpid()}_{suffix}"
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
    p.add_argument("--no-drain", action="store_true", help="skip the worker drain after each route")
    p.add_argument(
        "--drain-seconds",
        type=float,
        default=30,
        help="time budget of each drain (the rate over that time is reported)",
    )
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
            rows += bench_db("SQLite", sqlite_databases(work, "full"), args, work)
        if args.compare_normal:
            # What durability costs: the same run with synchronous=NORMAL, which can lose the
            # last acknowledged events on a power cut. nurture never runs like this.
            normal = sqlite_databases(work, "normal")
            rows += bench_db("SQLite (NORMAL, not durable)", normal, args, work, "NORMAL")
        if not args.no_pg:
            rows += bench_db("PostgreSQL", pg_databases(args.pg), args, work)
    print(f"\ningest, {args.connections} connections, {args.seconds} s each, one uvicorn worker")
    head = ["db", "target", "req/s", "p50 ms", "p99 ms", "vs no-op", "vs track", "CPU us/req"]
    head += ["rows/commit", "errors", "one worker drains it: ev/s"]
    print(table(rows, head))
    lines = ratios()
    if lines:
        print("PostgreSQL / SQLite, same run:")
        print("\n".join(lines))
    print(
        "Each route runs on a fresh database. vs no-op: against the bare Starlette route on the"
        " same server; CPU us/req: the server process's CPU time per answered request (steadier"
        " than req/s when the machine is shared); rows/commit: requests sharing a group commit;"
        " drains: events/s of one worker with the default pack over what the route stored."
    )


if __name__ == "__main__":
    main()
