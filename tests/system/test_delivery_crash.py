"""A worker SIGKILLed mid-send on PostgreSQL; a fresh ``nurture worker`` settles the e-mail.

The provider is a real HTTP server on 127.0.0.1 speaking Resend's or Brevo's documented API
(the request checks of ``nurture.testing.provider_apis``). Two crash windows:

- ``claimed``: the ``messages`` row is claimed and committed, the provider has seen nothing
  (``tests.system.delivery_worker`` stops before its first request);
- ``accepted``: a real ``nurture worker`` sent the e-mail, the provider accepted it and holds
  the answer back until the test has killed the worker.

Either way the next worker delivers the e-mail exactly once (Resend: same ``Idempotency-Key``;
Brevo: look-up by our tag before resending) and records how on the row (``settled``).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from nurture import jobs
from nurture.database.engine import Database
from nurture.storage import contacts as contact_store
from nurture.storage import jobs as job_store
from nurture.storage import messages as message_store
from nurture.testing import FakeBrevo, FakeResend, ProviderServer
from tests.helpers import email_job
from tests.system.serving import WAIT_SECONDS

pytestmark = [pytest.mark.slow, pytest.mark.postgres]

ROOT = Path(__file__).resolve().parents[2]
NURTURE = str(Path(sys.executable).parent / "nurture")
KEY = "seq:crash:reminder"


def wait_for(what: str, ready: Callable[[], bool], proc: subprocess.Popen[bytes] | None) -> None:
    deadline = time.monotonic() + WAIT_SECONDS
    while time.monotonic() < deadline:
        if ready():
            return
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"worker exited with {proc.returncode} before {what}")
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def message_row(db: Database) -> dict[str, Any] | None:
    with db.read() as conn:
        return message_store.get_by_key(conn, KEY)


def job_status(db: Database) -> str:
    with db.read() as conn:
        job = job_store.get_by_key(conn, KEY)
    assert job is not None
    return str(job["status"])


def worker_env(pg_url: str, provider: str, api_url: str, **extra: str) -> dict[str, str]:
    """A worker process's environment: ``provider`` at ``api_url``, short leases and polls."""
    return {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "NURTURE_DATABASE_URL": pg_url,
        "NURTURE_EMAIL_PROVIDER": provider,
        "NURTURE_RESEND_API_KEY": FakeResend.api_key,
        "NURTURE_BREVO_API_KEY": FakeBrevo.api_key,
        f"NURTURE_{provider.upper()}_API_URL": api_url,
        "NURTURE_SECRET_KEY": "crash-test-key",
        "NURTURE_EMAIL_FROM": "Shop <shop@example.com>",
        "NURTURE_JOB_LEASE_SECONDS": "2",
        "NURTURE_JOB_MAX_IDLE_SECONDS": "0.5",
        "NURTURE_WORKER_POLL_SECONDS": "0.5",
        **extra,
    }


@pytest.fixture
def crash_db(pg_url: str) -> Iterator[Database]:
    db = Database(pg_url)
    now = datetime.now(UTC)
    with db.begin() as conn:
        contact = contact_store.create(conn, "ann@example.com", now, {"first_name": "Ann"})
        jobs.enqueue(
            conn,
            kind="send_email",
            key=KEY,
            run_at=now,
            contact_id=contact.id,
            payload=email_job(
                contact.id, KEY, rule_id=None, step_id="reminder", transactional=True
            ).payload,
        )
    yield db
    db.dispose()


def spawn(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(args, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)


CASES = [
    # provider, crash window, how the retry settles it
    ("resend", "claimed", "idempotency_key"),
    ("resend", "accepted", "idempotency_key"),
    ("brevo", "claimed", "resent_not_found"),
    ("brevo", "accepted", "found_at_provider"),
]


@pytest.mark.parametrize(("provider", "window", "settled"), CASES)
def test_sigkilled_worker_mid_send_is_settled_by_the_next_one(
    crash_db: Database, pg_url: str, tmp_path: Path, provider: str, window: str, settled: str
) -> None:
    fake: FakeResend | FakeBrevo
    if provider == "resend":
        fake, origin, base = FakeResend(), "https://api.resend.com", ""
    else:
        fake, origin, base = FakeBrevo(), "https://api.brevo.com", "/v3"
    with ProviderServer(fake, origin, hold_first=window == "accepted") as server:
        env = worker_env(pg_url, provider, server.url + base)
        if window == "claimed":
            paused = tmp_path / "paused"
            first = spawn(
                [sys.executable, "-m", "tests.system.delivery_worker", str(paused)],
                env,
                tmp_path / "first.log",
            )
            wait_for("the pause before the provider call", paused.exists, first)
        else:
            first = spawn([NURTURE, "worker"], env, tmp_path / "first.log")
            wait_for("the provider to accept the e-mail", server.held.is_set, first)
        row = message_row(crash_db)
        assert row is not None and (row["status"], row["attempts"]) == ("sending", 1)
        assert len(fake.accepted) == (0 if window == "claimed" else 1)
        first.send_signal(signal.SIGKILL)
        assert first.wait(timeout=WAIT_SECONDS) == -signal.SIGKILL

        second = spawn([NURTURE, "worker"], env, tmp_path / "second.log")
        try:
            wait_for(
                "the e-mail to be settled",
                lambda: (
                    (message_row(crash_db) or {}).get("status") == "sent"
                    and job_status(crash_db) == "done"
                ),
                second,
            )
        finally:
            second.send_signal(signal.SIGTERM)
            code = second.wait(timeout=WAIT_SECONDS)
        assert code == 0, (tmp_path / "second.log").read_text()
    assert server.errors == []
    assert len(fake.accepted) == 1, "delivered exactly once"
    row = message_row(crash_db)
    assert row is not None
    assert row["status"] == "sent" and row["settled"] == settled and row["attempts"] == 2
    expected_id = "re_1" if provider == "resend" else "<1@smtp-relay.mailin.fr>"
    assert row["provider_message_id"] == expected_id
