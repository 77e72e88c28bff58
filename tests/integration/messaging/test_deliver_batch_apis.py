"""Provider batch APIs through the delivery service: Resend ``/emails/batch`` and Brevo
``messageVersions``, against the documented-shape fakes in ``nurture.testing``."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import orjson
from sqlalchemy import func, select

from nurture.clock import VirtualClock
from nurture.core.channels import SendUncertain
from nurture.database.engine import Database
from nurture.errors import ProviderError, RateLimited
from nurture.messaging.ratelimit import RateLimiter
from nurture.providers.brevo.sender import BrevoEmail
from nurture.providers.http import new_client
from nurture.providers.resend.sender import ResendEmail
from nurture.schema.tables import message_batches
from nurture.storage import messages as message_store
from nurture.testing import FakeBrevo, FakeResend
from tests.helpers import Job, email_job, make_delivery, new_contact


def jobs_for(db: Database, clock: VirtualClock, n: int, **extra: Any) -> list[Job]:
    return [
        email_job(new_contact(db, clock, email=f"b{i}@example.com"), key=f"b:{i}", **extra)
        for i in range(n)
    ]


def run(delivery: Any, jobs: list[Job]) -> list[BaseException | None]:
    """Send ``jobs`` concurrently (one batch), as the worker's attempts do."""

    async def go() -> list[BaseException | None]:
        results = await asyncio.gather(
            *(delivery.send_email(j) for j in jobs), return_exceptions=True
        )
        return [r if isinstance(r, BaseException) else None for r in results]

    return asyncio.run(go())


def again(jobs: list[Job]) -> list[Job]:
    return [Job(j.key, j.payload, attempt=2) for j in jobs]


def rows(db: Database, jobs: list[Job]) -> dict[str, dict[str, Any]]:
    with db.read() as conn:
        found = {j.key: message_store.get_by_key(conn, j.key) for j in jobs}
    assert all(r is not None for r in found.values())
    return found  # type: ignore[return-value]


def stored_batches(db: Database) -> int:
    with db.read() as conn:
        return int(conn.execute(select(func.count()).select_from(message_batches)).scalar_one())


def resend(fake: FakeResend) -> tuple[ResendEmail, httpx.AsyncClient]:
    client = new_client(5.0, fake.transport())
    return ResendEmail(fake.api_key, client), client


def brevo(fake: FakeBrevo) -> tuple[BrevoEmail, httpx.AsyncClient]:
    client = new_client(5.0, fake.transport())
    return BrevoEmail(fake.api_key, client), client


# -- Resend -------------------------------------------------------------------------------------


def test_resend_sends_a_batch_in_one_request(db: Database, clock: VirtualClock) -> None:
    fake = FakeResend()
    channel, _ = resend(fake)
    delivery = make_delivery(db, clock, channel)
    jobs = jobs_for(db, clock, 12)
    assert run(delivery, jobs) == [None] * 12
    [request] = fake.requests
    assert request.url.path == "/emails/batch"
    assert request.headers["x-batch-validation"] == "permissive"
    assert request.headers["idempotency-key"].startswith("nurture-batch-")
    items = orjson.loads(request.content)
    found = rows(db, jobs)
    # Item i is the e-mail of message_ids[i]: tags carry our id, answers map back by position.
    for item in items:
        row = next(r for r in found.values() if r["to_address"] in item["to"][0])
        assert item["tags"] == [{"name": "nurture_message_id", "value": str(row["id"])}]
        assert item["headers"]["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert {r["status"] for r in found.values()} == {"sent"}
    assert len({r["provider_message_id"] for r in found.values()}) == 12
    assert stored_batches(db) == 0  # settled: the stored request is gone
    assert len(fake.accepted) == 12


def test_resend_partial_failure_retries_only_the_refused(db: Database, clock: VirtualClock) -> None:
    fake = FakeResend(refuse={"b3@example.com", "b8@example.com"})
    channel, _ = resend(fake)
    delivery = make_delivery(db, clock, channel)
    jobs = jobs_for(db, clock, 10)
    outcomes = run(delivery, jobs)
    failed = {j.key for j, o in zip(jobs, outcomes, strict=True) if o is not None}
    assert failed == {"b:3", "b:8"}
    assert all(isinstance(o, ProviderError) and o.permanent for o in outcomes if o is not None)
    found = rows(db, jobs)
    assert found["b:3"]["status"] == "failed" and "not valid" in found["b:3"]["error"]
    assert sum(r["status"] == "sent" for r in found.values()) == 8
    assert len(fake.accepted) == 8 and stored_batches(db) == 0
    # The address is fixed and every job runs again: only the two go, nobody twice.
    fake.refuse.clear()
    assert run(delivery, again(jobs)) == [None] * 10
    assert len(fake.accepted) == 10
    assert sorted(str(e["to"][0]) for e in fake.accepted) == sorted(
        f"Ann <b{i}@example.com>" for i in range(10)
    )
    assert {r["status"] for r in rows(db, jobs).values()} == {"sent"}


def test_resend_lost_batch_answer_is_replayed_not_resent(db: Database, clock: VirtualClock) -> None:
    fake = FakeResend(script=["accept-then-timeout"])
    channel, _ = resend(fake)
    delivery = make_delivery(db, clock, channel)
    jobs = jobs_for(db, clock, 6)
    outcomes = run(delivery, jobs)
    assert all(isinstance(o, SendUncertain) for o in outcomes)
    assert len(fake.accepted) == 6  # Resend has them; we do not know
    assert {r["status"] for r in rows(db, jobs).values()} == {"sending"}
    assert stored_batches(db) == 1
    # One of the six retries first, alone: it replays the stored request, which settles all six.
    assert run(delivery, again(jobs[2:3])) == [None]
    assert len(fake.accepted) == 6
    replay, first = fake.requests[-1], fake.requests[0]
    assert replay.content == first.content
    assert replay.headers["idempotency-key"] == first.headers["idempotency-key"]
    found = rows(db, jobs)
    assert {r["status"] for r in found.values()} == {"sent"}
    assert {r["settled"] for r in found.values()} == {"idempotency_key"}
    assert stored_batches(db) == 0
    # The other five jobs find their rows settled and send nothing.
    before = len(fake.requests)
    assert run(delivery, again(jobs)) == [None] * 6
    assert len(fake.requests) == before and len(fake.accepted) == 6


def test_resend_429_on_a_batch_retries_every_member_and_keeps_nothing(
    db: Database, clock: VirtualClock
) -> None:
    fake = FakeResend(
        script=[httpx.Response(429, headers={"retry-after": "2"}, json={"name": "rate_limit"})]
    )
    channel, _ = resend(fake)
    delivery = make_delivery(db, clock, channel)
    jobs = jobs_for(db, clock, 4)
    outcomes = run(delivery, jobs)
    assert all(isinstance(o, ProviderError) and o.retry_after == 2 for o in outcomes)
    assert {r["status"] for r in rows(db, jobs).values()} == {"retrying"}  # known unsent
    assert stored_batches(db) == 0
    assert run(delivery, again(jobs)) == [None] * 4
    assert len(fake.accepted) == 4


# -- Brevo --------------------------------------------------------------------------------------


def test_brevo_sends_transactional_mail_as_message_versions(
    db: Database, clock: VirtualClock
) -> None:
    fake = FakeBrevo()
    channel, _ = brevo(fake)
    delivery = make_delivery(db, clock, channel)
    jobs = jobs_for(db, clock, 5, transactional=True)
    assert run(delivery, jobs) == [None] * 5
    [request] = fake.requests
    body = orjson.loads(request.content)
    found = rows(db, jobs)
    assert [v["to"][0]["email"] for v in body["messageVersions"]] == [
        f"b{i}@example.com" for i in range(5)
    ]
    assert sorted(body["tags"]) == sorted(f"nurture-{r['id']}" for r in found.values())
    assert len(body["headers"]["idempotencyKey"]) == 36
    ids = [found[f"b:{i}"]["provider_message_id"] for i in range(5)]
    assert ids == [f"<{i}@smtp-relay.mailin.fr>" for i in range(1, 6)]  # messageIds in order
    assert len(fake.accepted) == 5


def test_brevo_marketing_mail_goes_one_request_each(db: Database, clock: VirtualClock) -> None:
    # List-Unsubscribe differs per contact and Brevo's headers are per request.
    fake = FakeBrevo()
    channel, _ = brevo(fake)
    delivery = make_delivery(db, clock, channel)
    jobs = jobs_for(db, clock, 3)
    assert run(delivery, jobs) == [None] * 3
    assert len(fake.requests) == 3
    assert all("messageVersions" not in orjson.loads(r.content) for r in fake.requests)


def test_brevo_refused_batch_falls_back_so_only_the_bad_address_fails(
    db: Database, clock: VirtualClock
) -> None:
    fake = FakeBrevo(refuse={"b2@example.com"})
    channel, _ = brevo(fake)
    delivery = make_delivery(db, clock, channel)
    jobs = jobs_for(db, clock, 5, transactional=True)
    outcomes = run(delivery, jobs)
    assert [o is not None for o in outcomes] == [False, False, True, False, False]
    found = rows(db, jobs)
    assert found["b:2"]["status"] == "failed"
    assert sum(r["status"] == "sent" for r in found.values()) == 4
    assert sorted(e["to"][0]["email"] for e in fake.accepted) == [
        "b0@example.com",
        "b1@example.com",
        "b3@example.com",
        "b4@example.com",
    ]


def test_brevo_lost_batch_answer_is_looked_up_not_resent(db: Database, clock: VirtualClock) -> None:
    fake = FakeBrevo(script=["accept-then-timeout"])
    channel, _ = brevo(fake)
    delivery = make_delivery(db, clock, channel)
    jobs = jobs_for(db, clock, 4, transactional=True)
    assert all(isinstance(o, SendUncertain) for o in run(delivery, jobs))
    assert len(fake.accepted) == 4
    assert run(delivery, again(jobs)) == [None] * 4
    assert len(fake.accepted) == 4  # found by recipient and tag: nothing sent twice
    found = rows(db, jobs)
    assert {r["settled"] for r in found.values()} == {"found_at_provider"}
    assert {r["status"] for r in found.values()} == {"sent"}


def test_a_batch_request_takes_one_rate_limit_token(db: Database, clock: VirtualClock) -> None:
    # Resend limits requests (2/s), and a batch of a hundred e-mails is one request.
    fake = FakeResend()
    channel, _ = resend(fake)
    delivery = make_delivery(db, clock, channel)
    delivery.email_limiter = RateLimiter(db, clock, "email:resend", 1.0, 1, max_wait=0.0)
    jobs = jobs_for(db, clock, 10)
    assert run(delivery, jobs) == [None] * 10
    assert len(fake.requests) == 1 and len(fake.accepted) == 10
    # The bucket is empty now: the next batch waits for its token, unclaimed.
    later = [email_job(new_contact(db, clock, email="z@example.com"), key="later")]
    [waiting] = run(delivery, later)
    assert isinstance(waiting, RateLimited)
    with db.read() as conn:
        assert message_store.get_by_key(conn, "later") is None
