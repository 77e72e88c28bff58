"""``nurture worker --dry-run`` and ``nurture up --dry-run`` as real processes.

The e-mail provider is configured (Resend, pointed at a local server that stands for its API):
without the flag the worker would call it; with the flag the message is recorded
(``provider = recording``) and the server sees no request at all.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from nurture import jobs
from nurture.database import migrate
from nurture.database.engine import Database
from nurture.storage import contacts as contact_store
from nurture.storage import messages as message_store
from nurture.testing import FakeResend, ProviderServer, free_port
from tests.system.serving import WAIT_SECONDS

pytestmark = pytest.mark.slow
NURTURE = str(Path(sys.executable).parent / "nurture")


def enqueue_email(db: Database, key: str) -> None:
    now = datetime.now(UTC)
    with db.begin() as conn:
        contact = contact_store.load_by_email(conn, "ann@example.com") or contact_store.create(
            conn, "ann@example.com", now, {"first_name": "Ann"}
        )
        jobs.enqueue(
            conn,
            kind="send_email",
            key=key,
            run_at=now,
            contact_id=contact.id,
            payload={"template": "thank_you", "contact_id": contact.id, "vars": {}},
        )


def settled(db: Database, key: str) -> dict[str, Any] | None:
    with db.read() as conn:
        row = message_store.get_by_key(conn, key)
    return row if row is not None and row["status"] == "sent" else None


def run_until_sent(args: list[str], env: dict[str, str], db: Database, key: str) -> dict[str, Any]:
    proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + WAIT_SECONDS
        while (row := settled(db, key)) is None:
            assert proc.poll() is None, f"exited with {proc.returncode}"
            assert time.monotonic() < deadline, "the e-mail was never settled"
            time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=WAIT_SECONDS)
    assert proc.returncode == 0, err.decode()
    return row


@pytest.mark.parametrize("command", [["worker"], ["up", "--no-migrate"]])
def test_dry_run_flag_records_and_calls_no_provider(tmp_path: Path, command: list[str]) -> None:
    url = f"sqlite:///{tmp_path / 'nurture.db'}"
    db = Database(url)
    migrate.upgrade(db)
    fake = FakeResend()
    with ProviderServer(fake, "https://api.resend.com", hold_first=False) as server:
        env = {
            **os.environ,
            "NURTURE_DATABASE_URL": url,
            "NURTURE_PORT": str(free_port()),
            "NURTURE_EMAIL_PROVIDER": "resend",
            "NURTURE_RESEND_API_KEY": fake.api_key,
            "NURTURE_RESEND_API_URL": server.url,
            "NURTURE_SECRET_KEY": "dry-run-test-key",
            "NURTURE_JOB_MAX_IDLE_SECONDS": "0.5",
            "NURTURE_WORKER_POLL_SECONDS": "0.5",
        }
        env.pop("NURTURE_DRY_RUN", None)
        enqueue_email(db, "dry:1")
        row = run_until_sent([NURTURE, *command, "--dry-run"], env, db, "dry:1")
        assert row["provider"] == "recording" and row["provider_message_id"]
        assert fake.requests == []
        # The same process without the flag does reach the provider: the server is live.
        enqueue_email(db, "real:1")
        row = run_until_sent([NURTURE, *command], env, db, "real:1")
        assert row["provider"] == "resend" and len(fake.accepted) == 1
    assert server.errors == []
    db.dispose()
