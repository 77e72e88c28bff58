"""A worker SIGKILLed between a batch's provider call and its bookkeeping, on PostgreSQL.

Five ``send_email`` jobs are due together, so a real ``nurture worker`` sends them as one
provider request: Resend ``/emails/batch`` (marketing mail) or Brevo ``messageVersions``
(transactional mail, which shares its request-level headers). The provider, a real HTTP server
on 127.0.0.1 checking the documented request shapes, accepts the five e-mails and holds its
answer back until the test has killed the worker; the five rows stay ``sending``. A fresh worker
takes the jobs over when the leases expire and the provider ends up with each e-mail exactly
once: Resend's stored batch is replayed under the same Idempotency-Key, Brevo's e-mails are
found by recipient and tag.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from nurture import jobs
from nurture.database.engine import Database
from nurture.schema.tables import message_batches
from nurture.storage import contacts as contact_store
from nurture.storage import jobs as job_store
from nurture.storage import messages as message_store
from nurture.testing import FakeBrevo, FakeResend, ProviderServer
from tests.helpers import email_job
from tests.system.serving import WAIT_SECONDS
from tests.system.test_delivery_crash import NURTURE, spawn, wait_for, worker_env

pytestmark = [pytest.mark.slow, pytest.mark.postgres]

COUNT = 5
KEYS = [f"campaign:crash:{i}" for i in range(COUNT)]


def rows(db: Database) -> list[dict[str, Any]]:
    with db.read() as conn:
        found = [message_store.get_by_key(conn, key) for key in KEYS]
    return [r for r in found if r is not None]


def all_done(db: Database) -> bool:
    with db.read() as conn:
        statuses = [(job_store.get_by_key(conn, key) or {}).get("status") for key in KEYS]
    sent = [r for r in rows(db) if r["status"] == "sent"]
    return statuses == ["done"] * COUNT and len(sent) == COUNT


def stored_batches(db: Database) -> int:
    with db.read() as conn:
        return int(conn.execute(select(func.count()).select_from(message_batches)).scalar_one())


def enqueue(db: Database, transactional: bool) -> None:
    now = datetime.now(UTC)
    with db.begin() as conn:
        for i, key in enumerate(KEYS):
            contact = contact_store.create(conn, f"c{i}@example.com", now, {"first_name": "Ann"})
            jobs.enqueue(
                conn,
                kind="send_email",
                key=key,
                run_at=now,
                contact_id=contact.id,
                payload=email_job(
                    contact.id, key, rule_id=None, transactional=transactional
                ).payload,
            )


@pytest.fixture
def crash_db(pg_url: str) -> Iterator[Database]:
    db = Database(pg_url)
    yield db
    db.dispose()


@pytest.mark.parametrize(
    ("provider", "settled"), [("resend", "idempotency_key"), ("brevo", "found_at_provider")]
)
def test_sigkill_after_the_batch_was_accepted_sends_each_email_once(
    crash_db: Database, pg_url: str, tmp_path: Path, provider: str, settled: str
) -> None:
    fake: FakeResend | FakeBrevo
    if provider == "resend":
        fake, origin, base = FakeResend(), "https://api.resend.com", ""
    else:
        fake, origin, base = FakeBrevo(), "https://api.brevo.com", "/v3"
    enqueue(crash_db, transactional=provider == "brevo")
    with ProviderServer(fake, origin, hold_first=True) as server:
        env = worker_env(pg_url, provider, server.url + base, NURTURE_EMAIL_RATE_PER_SECOND="1000")
        first = spawn([NURTURE, "worker"], env, tmp_path / "first.log")
        wait_for("the provider to accept the batch", server.held.is_set, first)
        # One request carried all five; their rows are claimed, the answer never came.
        assert len(fake.accepted) == COUNT
        batch_requests = [r for r in fake.requests if r.method == "POST"]
        assert len(batch_requests) == 1
        assert [r["status"] for r in rows(crash_db)] == ["sending"] * COUNT
        if provider == "resend":
            assert stored_batches(crash_db) == 1
        first.send_signal(signal.SIGKILL)
        assert first.wait(timeout=WAIT_SECONDS) == -signal.SIGKILL

        second = spawn([NURTURE, "worker"], env, tmp_path / "second.log")
        try:
            wait_for("the batch to be settled", lambda: all_done(crash_db), second)
        finally:
            second.send_signal(signal.SIGTERM)
            code = second.wait(timeout=WAIT_SECONDS)
        assert code == 0, (tmp_path / "second.log").read_text()
    assert server.errors == []
    recipients = sorted(
        str(e["to"][0]) if provider == "resend" else e["to"][0]["email"] for e in fake.accepted
    )
    assert len(recipients) == COUNT and len(set(recipients)) == COUNT, "each e-mail exactly once"
    found = rows(crash_db)
    assert {r["status"] for r in found} == {"sent"}
    assert {r["settled"] for r in found} == {settled}
    assert len({r["provider_message_id"] for r in found}) == COUNT
    assert stored_batches(crash_db) == 0
