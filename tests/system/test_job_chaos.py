"""Three worker processes drain 10,000 jobs on PostgreSQL while the test kills one every second.

SIGKILL: nothing is lost (expired leases are retaken), nothing is done twice in effect (one
``effects`` row per key), nothing is left running. SIGTERM: every worker drains and exits 0,
and no handler ever runs twice.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.exc import OperationalError
from sqlalchemy.pool import NullPool

from nurture.database import migrate
from nurture.database.engine import Database
from nurture.jobs import JobSpec, enqueue_many
from tests.conftest import pg_available
from tests.system.chaos_worker import EFFECTS_DDL

pytestmark = [pytest.mark.slow, pytest.mark.postgres]

ROOT = Path(__file__).resolve().parents[2]
# Sized so the chaos lasts most of a minute on a 2-core CI machine (about 60 worker stops per
# run): each stop is a separate chance to lose or repeat a job, and the suite runs twice (KILL
# and TERM), so more jobs would add minutes without a new kind of interleaving.
JOBS = 10_000
WORKERS = 3
# A worker is stopped every second for this long, or until every job is done if sooner.
CHAOS_SECONDS = 60
# Then the last fleet finishes undisturbed. Only a stuck run reaches this bound: on a shared,
# oversubscribed machine draining (and restarting a worker every second) can be slow, and
# slowness is not what this test is about.
SETTLE_SECONDS = 900


@pytest.fixture
def chaos_url() -> Iterator[str]:
    base = pg_available()
    name = f"nurture_chaos_{uuid.uuid4().hex[:10]}"
    admin = create_engine(base, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = base.rsplit("/", 1)[0] + "/" + name
    db = Database(url)
    migrate.upgrade(db)
    now = datetime.now(UTC)
    with db.begin() as conn:
        conn.execute(text(EFFECTS_DDL))
        for start in range(0, JOBS, 2000):
            specs = [JobSpec("effect", f"e{i}", now, {"i": i}) for i in range(start, start + 2000)]
            enqueue_many(conn, specs, now=now)
    db.dispose()
    yield url
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


class Fleet:
    def __init__(self, url: str, tmp: Path) -> None:
        self.url, self.tmp = url, tmp
        self.live: list[subprocess.Popen[bytes]] = []
        self.stopped: list[subprocess.Popen[bytes]] = []

    def start(self) -> None:
        log = open(self.tmp / f"worker-{len(self.live) + len(self.stopped)}.log", "wb")  # noqa: SIM115
        proc = subprocess.Popen(
            [sys.executable, "-m", "tests.system.chaos_worker", self.url, str(self.tmp)],
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
        log.close()
        self.live.append(proc)

    def ready(self) -> list[subprocess.Popen[bytes]]:
        return [p for p in self.live if (self.tmp / f"{p.pid}.ready").exists()]

    def stop_one(self, sig: signal.Signals, rng: random.Random) -> bool:
        candidates = self.ready()
        if not candidates:
            return False
        victim = rng.choice(candidates)
        victim.send_signal(sig)
        self.live.remove(victim)
        self.stopped.append(victim)
        return True

    def shutdown(self) -> None:
        # A worker still importing has no signal handler yet; let each get ready first.
        until = time.monotonic() + 30
        while len(self.ready()) < len(self.live) and time.monotonic() < until:
            time.sleep(0.1)
        for proc in self.live:
            proc.send_signal(signal.SIGTERM)
        self.stopped.extend(self.live)
        self.live = []
        for proc in self.stopped:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def remaining(engine_url: str) -> int:
    engine = create_engine(engine_url, poolclass=NullPool)
    # The server is shared (max_connections): while it is full, ask again rather than fail.
    for _ in range(60):
        try:
            with engine.connect() as conn:
                left = conn.execute(
                    text("SELECT count(*) FROM jobs WHERE status <> 'done'")
                ).scalar_one()
            return int(left)
        except OperationalError:
            time.sleep(1)
    raise AssertionError("the database refused connections for a minute")


def run_chaos(url: str, tmp: Path, sig: signal.Signals) -> Fleet:
    rng = random.Random(20261123)
    fleet = Fleet(url, tmp)
    for _ in range(WORKERS):
        fleet.start()
    chaos_until = time.monotonic() + CHAOS_SECONDS
    try:
        while remaining(url) and time.monotonic() < chaos_until:
            time.sleep(1)
            # Replace only a stopped worker: while workers are still starting (slow on a busy
            # machine) the fleet would otherwise grow by one a second and exhaust connections.
            if fleet.stop_one(sig, rng):
                fleet.start()
        # Stop the chaos; the last fleet finishes (and lost leases expire) undisturbed.
        settle_until = time.monotonic() + SETTLE_SECONDS
        while remaining(url) and time.monotonic() < settle_until:
            time.sleep(0.5)
    finally:
        fleet.shutdown()
    return fleet


def check_every_job_done_once(url: str) -> dict[str, int]:
    engine = create_engine(url)
    with engine.connect() as conn:
        by_status = dict(
            conn.execute(text("SELECT status, count(*) FROM jobs GROUP BY status")).all()
        )
        effects = conn.execute(
            text("SELECT count(*), count(DISTINCT key), min(attempts), max(attempts) FROM effects")
        ).one()
        orphans = conn.execute(
            text(
                "SELECT count(*) FROM jobs j "
                "WHERE NOT EXISTS (SELECT 1 FROM effects e WHERE e.key = j.key)"
            )
        ).scalar_one()
    engine.dispose()
    assert by_status == {"done": JOBS}, by_status
    rows, distinct, least, most = effects
    assert rows == distinct == JOBS
    assert orphans == 0
    return {"min_attempts": least, "max_attempts": most}


def test_sigkill_loses_nothing_and_duplicates_no_effect(chaos_url: str, tmp_path: Path) -> None:
    fleet = run_chaos(chaos_url, tmp_path, signal.SIGKILL)
    check_every_job_done_once(chaos_url)
    assert any(p.returncode == -signal.SIGKILL for p in fleet.stopped), "no worker was killed"


def test_sigterm_drains_cleanly(chaos_url: str, tmp_path: Path) -> None:
    fleet = run_chaos(chaos_url, tmp_path, signal.SIGTERM)
    attempts = check_every_job_done_once(chaos_url)
    codes = [p.returncode for p in fleet.stopped]
    assert len(codes) > WORKERS, "no worker was stopped during the run"
    assert codes == [0] * len(codes), codes
    # A clean drain finishes or hands back every attempt: no handler ever ran twice.
    assert attempts == {"min_attempts": 1, "max_attempts": 1}
