"""SIGTERM drains, with real processes (what systemd's ``systemctl stop`` sends).

- ``nurture serve`` under load: it stops accepting, answers the requests it has, and exits 0;
  every event it answered 202 for is in the database.
- ``nurture worker`` processing events: it stops between batches, nothing half-done or failed,
  no partition lock left (they belong to the batch's transaction); the next worker goes on.
- ``nurture worker`` with e-mails held at the provider: within NURTURE_JOB_GRACE_SECONDS the
  jobs finish; past it they are handed back at once (``scheduled``, the attempt refunded),
  none left ``running`` until its lease expires, and the next worker delivers each e-mail once.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select, text

from nurture import jobs
from nurture.clock import SystemClock
from nurture.config import Settings
from nurture.core.events import ContactRef, InboundEvent
from nurture.database.engine import Database
from nurture.intake.ingest import Ingestor
from nurture.schema.tables import events
from nurture.storage import contacts as contact_store
from nurture.storage import events as event_store
from nurture.storage import jobs as job_store
from nurture.storage import messages as message_store
from nurture.testing import FakeResend, ProviderServer, new_secret
from tests.helpers import email_job
from tests.system.serving import NURTURE, ROOT, WAIT_SECONDS, Load, nurture_serve

pytestmark = pytest.mark.slow

BACKENDS = ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]


@pytest.fixture(params=BACKENDS)
def url(request: pytest.FixtureRequest) -> str:
    name = "sqlite_url" if request.param == "sqlite" else "pg_url"
    return str(request.getfixturevalue(name))


def wait_for(what: str, ready: Callable[[], bool], proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + WAIT_SECONDS
    while time.monotonic() < deadline:
        if ready():
            return
        if proc.poll() is not None:
            raise AssertionError(f"process exited with {proc.returncode} before {what}")
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


# -- nurture serve ----------------------------------------------------------------------------


def test_serve_answers_what_it_has_and_every_202_is_committed(url: str, tmp_path: Path) -> None:
    secret = new_secret()
    env = {
        **os.environ,
        "NURTURE_DATABASE_URL": url,
        "NURTURE_TRACK_SECRET": secret,
        "NURTURE_SHUTDOWN_GRACE_SECONDS": "20",
    }
    log = tmp_path / "serve.log"
    with (
        nurture_serve(env, log) as (base, proc),
        Load(partial(httpx.Client, base_url=base, timeout=30), secret) as load,
    ):
        load.wait_for(200, proc)
        load.stopping.set()
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=WAIT_SECONDS)
    assert code == 0, log.read_text()[-3000:]
    assert load.failures == []
    assert_committed(url, load.accepted)


def assert_committed(url: str, accepted: dict[str, int]) -> None:
    db = Database(url)
    try:
        with db.read() as conn:
            stored = dict(
                conn.execute(
                    select(events.c.dedupe_key, events.c.id).where(events.c.source == "track")
                ).all()
            )
    finally:
        db.dispose()
    missing = {k: v for k, v in accepted.items() if stored.get(f"track:id:{k}") != v}
    assert missing == {}, f"{len(missing)} of {len(accepted)} acknowledged events lost"


# -- nurture worker ---------------------------------------------------------------------------


EMAILS = 4


def held_resend() -> ProviderServer:
    """Resend's documented API over real HTTP; every answer is held until ``release``."""
    return ProviderServer(FakeResend(), "https://api.resend.com", hold_all=True)


def enqueue_emails(db: Database) -> list[str]:
    now = datetime.now(UTC)
    keys = []
    with db.begin() as conn:
        for i in range(EMAILS):
            contact = contact_store.create(conn, f"c{i}@example.com", now, {"first_name": "Cy"})
            key = f"seq:stop:{i}"
            jobs.enqueue(
                conn,
                kind="send_email",
                key=key,
                run_at=now,
                contact_id=contact.id,
                payload=email_job(
                    contact.id, key, rule_id=None, step_id="stop", transactional=True
                ).payload,
            )
            keys.append(key)
    return keys


def job_rows(db: Database, keys: list[str]) -> list[dict[str, Any]]:
    with db.read() as conn:
        return [job_store.get_by_key(conn, k) or {} for k in keys]


def message_rows(db: Database, keys: list[str]) -> list[dict[str, Any]]:
    with db.read() as conn:
        return [message_store.get_by_key(conn, k) or {} for k in keys]


@pytest.fixture
def worker_env(url: str) -> Iterator[tuple[Database, dict[str, str]]]:
    db = Database(url)
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "NURTURE_DATABASE_URL": url,
        "NURTURE_EMAIL_PROVIDER": "resend",
        "NURTURE_RESEND_API_KEY": FakeResend.api_key,
        "NURTURE_SECRET_KEY": "stop-test-key",
        "NURTURE_EMAIL_FROM": "Shop <shop@example.com>",
        # Long, so nothing here is freed by a lease running out.
        "NURTURE_JOB_LEASE_SECONDS": "600",
        "NURTURE_JOB_MAX_IDLE_SECONDS": "0.5",
        "NURTURE_WORKER_POLL_SECONDS": "0.5",
    }
    yield db, env
    db.dispose()


def spawn_worker(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(
            [NURTURE, "worker"], cwd=log.parent, env=env, stdout=out, stderr=subprocess.STDOUT
        )


def test_worker_finishes_running_jobs_within_the_grace_period(
    worker_env: tuple[Database, dict[str, str]], tmp_path: Path
) -> None:
    db, env = worker_env
    keys = enqueue_emails(db)
    log = tmp_path / "worker.log"
    with held_resend() as provider:
        env = {**env, "NURTURE_RESEND_API_URL": provider.url, "NURTURE_JOB_GRACE_SECONDS": "60"}
        proc = spawn_worker(env, log)
        try:
            wait_for("every e-mail at the provider", lambda: provider.accepted() == EMAILS, proc)
            proc.send_signal(signal.SIGTERM)
            # The worker has stopped claiming and waits for its attempts; now they complete.
            wait_for("the drain", lambda: '"action":"jobs.drain"' in log.read_text(), proc)
            provider.release.set()
            code = proc.wait(timeout=WAIT_SECONDS)
        finally:
            if proc.poll() is None:
                proc.kill()
    assert code == 0, log.read_text()[-3000:]
    assert [j["status"] for j in job_rows(db, keys)] == ["done"] * EMAILS
    assert [m["status"] for m in message_rows(db, keys)] == ["sent"] * EMAILS
    assert len(provider.fake.accepted) == EMAILS


def test_worker_hands_back_jobs_that_outlast_the_grace_period(
    worker_env: tuple[Database, dict[str, str]], tmp_path: Path
) -> None:
    db, env = worker_env
    keys = enqueue_emails(db)
    with held_resend() as provider:
        env = {**env, "NURTURE_RESEND_API_URL": provider.url, "NURTURE_JOB_GRACE_SECONDS": "1"}
        first = spawn_worker(env, tmp_path / "first.log")
        try:
            wait_for("every e-mail at the provider", lambda: provider.accepted() == EMAILS, first)
            first.send_signal(signal.SIGTERM)
            code = first.wait(timeout=WAIT_SECONDS)
        finally:
            if first.poll() is None:
                first.kill()
        assert code == 0, (tmp_path / "first.log").read_text()[-3000:]
        # Handed back, not left running until the 600 s lease expires: due again at once, and
        # the interrupted attempt does not count against the job's attempts.
        for job in job_rows(db, keys):
            assert (job["status"], job["lease_until"], job["attempts"]) == ("scheduled", None, 0)
        # The provider got the e-mails but the worker never learnt it: outcome unknown.
        assert [m["status"] for m in message_rows(db, keys)] == ["sending"] * EMAILS

        provider.release.set()
        second = spawn_worker(env, tmp_path / "second.log")
        try:
            wait_for(
                "the next worker to settle every e-mail",
                lambda: all(j["status"] == "done" for j in job_rows(db, keys)),
                second,
            )
        finally:
            second.send_signal(signal.SIGTERM)
            code = second.wait(timeout=WAIT_SECONDS)
        assert code == 0, (tmp_path / "second.log").read_text()[-3000:]
    assert [m["status"] for m in message_rows(db, keys)] == ["sent"] * EMAILS
    # Resend saw each e-mail twice with the same Idempotency-Key and delivered it once.
    assert len(provider.fake.accepted) == EMAILS


def test_worker_stops_between_event_batches_and_leaves_none_claimed(
    worker_env: tuple[Database, dict[str, str]], tmp_path: Path
) -> None:
    db, env = worker_env
    now = datetime.now(UTC)
    batch = [
        InboundEvent(
            source="track",
            type="page.viewed",
            dedupe_key=f"id:part-{i}",
            contact=ContactRef(email=f"p{i % 500}@example.com"),
            data={"url": f"/{i}"},
            occurred_at=now,
        )
        for i in range(3000)
    ]
    ingestor = Ingestor(db, SystemClock())
    try:
        ingestor.store(batch)
    finally:
        ingestor.close()

    def counts() -> dict[str, int]:
        with db.read() as conn:
            return event_store.count_by_status(conn)

    env = {**env, "NURTURE_PROCESS_BATCH_SIZE": "50"}
    first = spawn_worker(env, tmp_path / "first.log")
    try:
        wait_for("some events processed", lambda: counts().get("processed", 0) > 0, first)
        first.send_signal(signal.SIGTERM)
        code = first.wait(timeout=WAIT_SECONDS)
    finally:
        if first.poll() is None:
            first.kill()
    assert code == 0, (tmp_path / "first.log").read_text()[-3000:]
    # Stopped between batches: nothing half-done, nothing failed or charged an attempt.
    with db.read() as conn:
        interrupted = conn.execute(
            select(events.c.id).where(events.c.status != "processed", events.c.attempts > 0)
        ).all()
    assert interrupted == []
    left = counts()
    assert left.get("failed", 0) == 0
    assert left.get("pending", 0) > 0, "stopped mid-stream, some events are left"
    if not db.is_sqlite:
        # Partition locks were transaction-scoped: every partition can be taken at once.
        with db.read() as conn:
            free = conn.execute(
                text(
                    "SELECT count(*) FROM generate_series(0, :n - 1) AS p "
                    "WHERE pg_try_advisory_xact_lock(7301, p)"
                ),
                {"n": Settings().partitions},
            ).scalar_one()
        assert free == Settings().partitions
    second = spawn_worker(env, tmp_path / "second.log")
    try:
        wait_for("the rest processed", lambda: counts().get("pending", 0) == 0, second)
    finally:
        second.send_signal(signal.SIGTERM)
        code = second.wait(timeout=WAIT_SECONDS)
    assert code == 0, (tmp_path / "second.log").read_text()[-3000:]
    assert counts().get("failed", 0) == 0
