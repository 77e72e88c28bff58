"""Concurrent ``send_email`` calls go out as one batch, with each job's outcome its own."""

from __future__ import annotations

import asyncio
from typing import Any

from sqlalchemy import event

from nurture.clock import VirtualClock
from nurture.contacts import suppression
from nurture.core.channels import OutboundEmail
from nurture.database.engine import Database
from nurture.errors import ProviderError, RateLimited
from nurture.messaging.ratelimit import RateLimiter
from nurture.storage import contacts as contact_store
from nurture.storage import messages as message_store
from nurture.testing import RecordingEmail
from tests.helpers import Job, email_job, make_delivery, new_contact


def jobs_for(db: Database, clock: VirtualClock, n: int, prefix: str = "batch") -> list[Job]:
    return [
        email_job(new_contact(db, clock, email=f"{prefix}{i}@example.com"), key=f"{prefix}:{i}")
        for i in range(n)
    ]


async def send_all(delivery: Any, jobs: list[Job]) -> list[BaseException | None]:
    results = await asyncio.gather(*(delivery.send_email(j) for j in jobs), return_exceptions=True)
    return [r if isinstance(r, BaseException) else None for r in results]


def rows(db: Database, jobs: list[Job]) -> list[dict[str, Any]]:
    with db.read() as conn:
        found = [message_store.get_by_key(conn, j.key) for j in jobs]
    assert all(r is not None for r in found)
    return found  # type: ignore[return-value]


def test_a_batch_costs_a_few_commits_not_a_few_per_email(db: Database, clock: VirtualClock) -> None:
    channel = RecordingEmail()
    delivery = make_delivery(db, clock, channel)
    jobs = jobs_for(db, clock, 60)
    commits: list[int] = []
    listener = lambda conn: commits.append(1)  # noqa: E731
    event.listen(db.engine, "commit", listener)
    try:
        assert asyncio.run(send_all(delivery, jobs)) == [None] * 60
    finally:
        event.remove(db.engine, "commit", listener)
    # One claim commit and one completion commit for the batch, not two per e-mail.
    assert len(commits) == 2
    assert len(channel.sent) == 60
    assert {r["status"] for r in rows(db, jobs)} == {"sent"}
    assert len({m.message_id for m in channel.sent}) == 60
    # Replays of the whole batch send nothing more.
    assert asyncio.run(send_all(delivery, [Job(j.key, j.payload, 2) for j in jobs])) == [None] * 60
    assert len(channel.sent) == 60


def test_each_job_gets_its_own_outcome_and_only_failures_are_sent_again(
    db: Database, clock: VirtualClock
) -> None:
    refused = {"batch3@example.com", "batch7@example.com"}

    def fail_some(message: OutboundEmail) -> None:
        if message.to in refused:
            raise ProviderError(f"refused {message.to}", permanent=message.to.startswith("batch3"))

    channel = RecordingEmail(fail_with=fail_some)
    delivery = make_delivery(db, clock, channel)
    jobs = jobs_for(db, clock, 10)
    outcomes = asyncio.run(send_all(delivery, jobs))
    failed = {j.key for j, o in zip(jobs, outcomes, strict=True) if o is not None}
    assert failed == {"batch:3", "batch:7"}
    statuses = {r["key"]: r["status"] for r in rows(db, jobs)}
    assert statuses["batch:3"] == "failed" and statuses["batch:7"] == "retrying"
    assert sum(s == "sent" for s in statuses.values()) == 8
    refused.clear()
    again = asyncio.run(send_all(delivery, [Job(j.key, j.payload, 2) for j in jobs]))
    assert again == [None] * 10
    # Eight went once; the two failures once more each (known unsent, so no duplicate).
    assert sorted(m.to for m in channel.sent).count("batch0@example.com") == 1
    assert len(channel.sent) == 10
    assert {r["status"] for r in rows(db, jobs)} == {"sent"}


def test_suppression_is_checked_at_send_time(db: Database, clock: VirtualClock) -> None:
    channel = RecordingEmail()
    delivery = make_delivery(db, clock, channel)
    jobs = jobs_for(db, clock, 5)
    # The job was queued before this contact unsubscribed; the send must still not happen.
    with db.begin() as conn:
        contact = contact_store.load(conn, int(jobs[2].payload["contact_id"]))
        assert contact is not None
        suppression.suppress(conn, contact, "unsubscribed", clock.now())
    assert asyncio.run(send_all(delivery, jobs)) == [None] * 5
    assert "batch2@example.com" not in {m.to for m in channel.sent}
    assert len(channel.sent) == 4
    row = rows(db, [jobs[2]])[0]
    assert row["status"] == "suppressed" and row["error"] == "unsubscribed"
    # Transactional mail still goes to an unsubscribed (not bounced) address.
    receipt = Job("receipt:2", {**jobs[2].payload, "transactional": True})
    asyncio.run(delivery.send_email(receipt))
    assert channel.sent[-1].to == "batch2@example.com"


def test_a_rate_limit_sends_what_it_allows_and_hands_the_rest_back(
    db: Database, clock: VirtualClock
) -> None:
    channel = RecordingEmail()
    delivery = make_delivery(db, clock, channel)
    delivery.email_limiter = RateLimiter(db, clock, "email:recording", 1.0, 3, max_wait=0.0)
    jobs = jobs_for(db, clock, 5)
    outcomes = asyncio.run(send_all(delivery, jobs))
    assert len(channel.sent) == 3
    waiting = [o for o in outcomes if o is not None]
    assert len(waiting) == 2 and all(isinstance(o, RateLimited) for o in waiting)
    assert all(o.retry_after and o.retry_after > 0 for o in waiting)  # type: ignore[union-attr]
    # Not claimed: no row says it might have been sent.
    with db.read() as conn:
        assert sum(message_store.get_by_key(conn, j.key) is None for j in jobs) == 2


def test_the_same_key_twice_in_a_batch_is_sent_once(db: Database, clock: VirtualClock) -> None:
    channel = RecordingEmail()
    delivery = make_delivery(db, clock, channel)
    job = email_job(new_contact(db, clock))
    assert asyncio.run(send_all(delivery, [job, job, job])) == [None] * 3
    assert len(channel.sent) == 1
