"""Exactly-once e-mail: claim, send, complete; suppression; templates; Brevo and Resend APIs."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path

import httpx
import orjson
import pytest

from nurture.bootstrap.delivery import build_delivery
from nurture.clock import VirtualClock
from nurture.config import Settings
from nurture.contacts import suppression
from nurture.core.channels import OutboundEmail, SendUncertain
from nurture.core.contacts import ContactState
from nurture.database.engine import Database
from nurture.errors import ProviderError
from nurture.messaging.deliver import Delivery
from nurture.messaging.ratelimit import RateLimiter
from nurture.providers.brevo.sender import BrevoEmail, BrevoSms
from nurture.providers.console.sender import ConsoleSms
from nurture.providers.http import new_client
from nurture.providers.resend.sender import ResendEmail
from nurture.storage import contacts as contact_store
from nurture.storage import messages as message_store
from nurture.storage import rate_limits
from nurture.testing import FakeBrevo, FakeResend, RecordingEmail
from tests.helpers import Job, default_pack, email_job, make_delivery, new_contact


def message(db: Database, key: str) -> dict[str, object]:
    with db.read() as conn:
        row = message_store.get_by_key(conn, key)
    assert row is not None
    return row


def suppress(db: Database, clock: VirtualClock, contact_id: int, reason: str) -> None:
    with db.begin() as conn:
        contact = contact_store.load(conn, contact_id)
        assert contact is not None
        suppression.suppress(conn, contact, reason, clock.now())


# -- claim / complete with the recording channel ----------------------------------------------


def test_sends_once_and_replays_do_nothing(db: Database, clock: VirtualClock) -> None:
    channel = RecordingEmail()
    delivery = make_delivery(db, clock, channel)
    cid = new_contact(db, clock)
    job = email_job(cid)
    asyncio.run(delivery.send_email(job))
    asyncio.run(delivery.send_email(job))  # a replayed or duplicated job
    asyncio.run(delivery.send_email(Job(job.key, job.payload, attempt=2)))
    [sent] = channel.sent
    assert sent.subject == "Merci pour votre achat!"
    assert sent.to == "ann@example.com" and sent.to_name == "Ann"
    assert sent.headers["List-Unsubscribe"].startswith("<https://nurture.example.com/u/")
    assert sent.headers["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    row = message(db, job.key)
    assert row["status"] == "sent" and row["attempts"] == 1 and row["settled"] is None
    assert row["provider_message_id"] == f"recorded-{sent.message_id}"
    assert row["rule_id"] == "purchase" and row["subject"] == "Merci pour votre achat!"


def test_suppressed_contact_gets_no_marketing_mail_but_gets_transactional(
    db: Database, clock: VirtualClock
) -> None:
    channel = RecordingEmail()
    delivery = make_delivery(db, clock, channel)
    cid = new_contact(db, clock)
    suppress(db, clock, cid, "unsubscribed")
    asyncio.run(delivery.send_email(email_job(cid, key="k-marketing")))
    asyncio.run(delivery.send_email(email_job(cid, key="k-receipt", transactional=True)))
    assert [m.key for m in channel.sent] == ["k-receipt"]
    assert "List-Unsubscribe" not in channel.sent[0].headers
    row = message(db, "k-marketing")
    assert row["status"] == "suppressed" and row["error"] == "unsubscribed"


def test_hard_bounced_address_gets_nothing_even_transactional(
    db: Database, clock: VirtualClock
) -> None:
    channel = RecordingEmail()
    delivery = make_delivery(db, clock, channel)
    cid = new_contact(db, clock)
    suppress(db, clock, cid, "bounced")
    asyncio.run(delivery.send_email(email_job(cid, key="k-receipt", transactional=True)))
    assert channel.sent == []
    assert message(db, "k-receipt")["status"] == "suppressed"


def test_erased_contact_stays_suppressed_by_address_hash(db: Database, clock: VirtualClock) -> None:
    cid = new_contact(db, clock)
    new_contact(db, clock, email="bob@example.com")  # so SQLite does not reuse the erased id
    suppress(db, clock, cid, "erased")
    with db.begin() as conn:
        contact_store.erase(conn, cid)
        again = contact_store.create(conn, "Ann@Example.com", clock.now()).id
        assert suppression.check(conn, again, "ann@example.com", transactional=True) == "erased"
    channel = RecordingEmail()
    asyncio.run(make_delivery(db, clock, channel).send_email(email_job(again)))
    asyncio.run(make_delivery(db, clock, channel).send_email(email_job(cid, key="gone")))
    assert channel.sent == []
    assert message(db, "gone")["status"] == "skipped"


def test_template_that_cannot_render_fails_naming_the_variable_then_retries(
    db: Database, clock: VirtualClock
) -> None:
    channel = RecordingEmail()
    delivery = make_delivery(db, clock, channel)
    cid = new_contact(db, clock)
    job = email_job(cid, key="campaign:1", template="recommendations")
    with pytest.raises(ProviderError, match="recommendations") as info:
        asyncio.run(delivery.send_email(job))
    assert info.value.permanent
    with db.read() as conn:
        assert message_store.get_by_key(conn, "campaign:1") is None  # nothing claimed
    job.payload["vars"] = {
        "recommendations": [
            {"product_key": "P1", "name": "Crémant", "scenario": "rebuy", "reason": "rebuy"}
        ]
    }
    asyncio.run(delivery.send_email(job))
    [sent] = channel.sent
    assert "Crémant" in (sent.text or "") and "{{" not in (sent.html or "")


def test_known_failure_retries_cleanly_unknown_outcome_is_settled(
    db: Database, clock: VirtualClock
) -> None:
    failures: list[Exception] = [ProviderError("503"), SendUncertain("timeout")]

    def fail(_: OutboundEmail) -> None:
        if failures:
            raise failures.pop(0)

    channel = RecordingEmail(fail_with=fail)
    delivery = make_delivery(db, clock, channel)
    job = email_job(new_contact(db, clock))
    with pytest.raises(ProviderError):
        asyncio.run(delivery.send_email(job))
    assert message(db, job.key)["status"] == "retrying"
    with pytest.raises(SendUncertain):
        asyncio.run(delivery.send_email(job))
    assert message(db, job.key)["status"] == "sending"
    asyncio.run(delivery.send_email(job))
    row = message(db, job.key)
    assert channel.uncertain == [row["id"]]  # only the attempt after the unknown outcome
    assert row["status"] == "sent" and row["settled"] == "recorded_again" and row["attempts"] == 3


def test_sms_uses_phone_and_template(db: Database, clock: VirtualClock) -> None:
    delivery = make_delivery(db, clock, RecordingEmail())
    cid = new_contact(db, clock, phone="+33611223344")
    job = Job(
        "sms:1", {"template": None, "text": "Bonjour {{ contact.first_name }}", "contact_id": cid}
    )
    asyncio.run(delivery.send_sms(job))
    [sms] = delivery.sms.sent  # type: ignore[attr-defined]
    assert (sms.to, sms.text) == ("+33611223344", "Bonjour Ann")
    assert message(db, "sms:1")["channel"] == "sms"
    no_phone = new_contact(db, clock, email="bob@example.com")
    asyncio.run(delivery.send_sms(Job("sms:2", {"text": "x", "contact_id": no_phone})))
    assert message(db, "sms:2")["status"] == "skipped"


# -- Brevo ------------------------------------------------------------------------------------


def brevo(fake: FakeBrevo) -> tuple[BrevoEmail, httpx.AsyncClient]:
    client = new_client(5.0, fake.transport())
    return BrevoEmail(fake.api_key, client), client


def run_with(client: httpx.AsyncClient, coro: object) -> None:
    async def go() -> None:
        try:
            await coro  # type: ignore[misc]
        finally:
            await client.aclose()

    asyncio.run(go())


def test_brevo_request_matches_the_documented_api(db: Database, clock: VirtualClock) -> None:
    fake = FakeBrevo()
    channel, client = brevo(fake)
    delivery = make_delivery(db, clock, channel)
    job = email_job(new_contact(db, clock))
    run_with(client, delivery.send_email(job))
    [body] = fake.accepted
    row = message(db, job.key)
    assert body["sender"] == {"email": "shop@example.com", "name": "Shop"}
    assert body["to"] == [{"email": "ann@example.com", "name": "Ann"}]
    assert body["subject"] == "Merci pour votre achat!"
    assert "<html" in body["htmlContent"] and "Bonjour Ann" in body["textContent"]
    assert orjson.loads(body["headers"]["X-Mailin-custom"]) == {
        "nurture_message_id": str(row["id"])
    }
    assert body["headers"]["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert len(body["headers"]["idempotencyKey"]) == 36  # a UUID, per Brevo's docs
    assert body["tags"] == [f"nurture-{row['id']}"]
    assert row["provider_message_id"] == "<1@smtp-relay.mailin.fr>"


def test_brevo_template_id_with_params(db: Database, clock: VirtualClock, tmp_path: object) -> None:
    from pathlib import Path

    from nurture.messaging.templates import TemplateStore

    root = Path(str(tmp_path))
    (root / "welcome").mkdir()
    (root / "welcome" / "meta.yaml").write_text(
        "brevo_template_id: 12\nparams: {FIRSTNAME: '{{ contact.first_name }}'}\n"
    )
    (root / "welcome" / "subject.txt").write_text("Bienvenue")
    fake = FakeBrevo()
    channel, client = brevo(fake)
    delivery = make_delivery(db, clock, channel, provider_templates=True)
    delivery.templates = TemplateStore([root])
    run_with(client, delivery.send_email(email_job(new_contact(db, clock), template="welcome")))
    [body] = fake.accepted
    assert body["templateId"] == 12 and body["params"] == {"FIRSTNAME": "Ann"}
    assert "htmlContent" not in body


def test_brevo_429_500_and_400(db: Database, clock: VirtualClock) -> None:
    fake = FakeBrevo(
        script=[
            httpx.Response(429, headers={"retry-after": "30"}, json={"code": "too_many_requests"}),
            httpx.Response(500, json={"code": "internal_error"}),
            "ok",
            httpx.Response(400, json={"code": "invalid_parameter", "message": "sender invalid"}),
        ]
    )
    channel, client = brevo(fake)
    delivery = make_delivery(db, clock, channel)
    job = email_job(new_contact(db, clock))
    other = email_job(new_contact(db, clock, email="bob@example.com"), key="other")

    async def scenario() -> None:
        try:
            with pytest.raises(ProviderError) as first:
                await delivery.send_email(job)
            assert not first.value.permanent and first.value.retry_after == 30
            with pytest.raises(ProviderError) as second:
                await delivery.send_email(job)
            assert not second.value.permanent
            await delivery.send_email(job)
            with pytest.raises(ProviderError) as bad:
                await delivery.send_email(other)
            assert bad.value.permanent and "sender invalid" in str(bad.value)
        finally:
            await client.aclose()

    asyncio.run(scenario())
    assert len(fake.accepted) == 1  # 429 and 500 then success: one e-mail, not two
    row = message(db, job.key)
    assert row["status"] == "sent" and row["attempts"] == 3 and row["settled"] is None
    assert message(db, "other")["status"] == "failed"


def test_brevo_unknown_outcome_is_looked_up_before_resending(
    db: Database, clock: VirtualClock
) -> None:
    fake = FakeBrevo(script=["accept-then-timeout"])
    channel, client = brevo(fake)
    delivery = make_delivery(db, clock, channel)
    job = email_job(new_contact(db, clock))

    async def scenario() -> None:
        try:
            with pytest.raises(SendUncertain):
                await delivery.send_email(job)
            await delivery.send_email(job)
        finally:
            await client.aclose()

    asyncio.run(scenario())
    assert len(fake.accepted) == 1
    row = message(db, job.key)
    assert row["settled"] == "found_at_provider"
    assert row["provider_message_id"] == "<1@smtp-relay.mailin.fr>"
    assert [r.method for r in fake.requests] == ["POST", "GET"]


def test_brevo_unknown_outcome_not_found_is_sent_again(db: Database, clock: VirtualClock) -> None:
    fake = FakeBrevo(script=["ok"])
    channel, client = brevo(fake)
    delivery = make_delivery(db, clock, channel)
    job = email_job(new_contact(db, clock))
    # A worker died after the claim, before the call: the row says "sending".
    with db.begin() as conn:
        claim = message_store.claim(
            conn,
            {"key": job.key, "channel": "email", "provider": "brevo", "transactional": False},
            clock.now(),
        )
    assert claim is not None and claim.previous is None
    run_with(client, delivery.send_email(job))
    assert len(fake.accepted) == 1
    row = message(db, job.key)
    assert row["status"] == "sent" and row["settled"] == "resent_not_found"


# -- Resend -----------------------------------------------------------------------------------


def test_resend_request_shape_and_timeout_after_acceptance(
    db: Database, clock: VirtualClock
) -> None:
    fake = FakeResend(script=["accept-then-timeout"])
    client = new_client(5.0, fake.transport())
    delivery = make_delivery(db, clock, ResendEmail(fake.api_key, client))
    job = email_job(new_contact(db, clock))

    async def scenario() -> None:
        try:
            with pytest.raises(SendUncertain):
                await delivery.send_email(job)
            await delivery.send_email(job)
        finally:
            await client.aclose()

    asyncio.run(scenario())
    [body] = fake.accepted  # no duplicate thanks to the Idempotency-Key
    keys = {r.headers["idempotency-key"] for r in fake.requests}
    assert len(fake.requests) == 2 and len(keys) == 1
    row = message(db, job.key)
    assert body["from"] == "Shop <shop@example.com>" and body["to"] == ["Ann <ann@example.com>"]
    assert body["tags"] == [{"name": "nurture_message_id", "value": str(row["id"])}]
    assert body["headers"]["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert "Bonjour Ann" in body["text"]
    assert row["status"] == "sent" and row["settled"] == "idempotency_key"
    assert row["provider_message_id"] == "re_1"


def test_resend_4xx_fails_at_once_and_5xx_retries(db: Database, clock: VirtualClock) -> None:
    fake = FakeResend(
        script=[
            httpx.Response(422, json={"name": "validation_error", "message": "Invalid `to`"}),
            httpx.Response(500, json={"name": "internal_server_error"}),
        ]
    )
    client = new_client(5.0, fake.transport())
    delivery = make_delivery(db, clock, ResendEmail(fake.api_key, client))
    bad = email_job(new_contact(db, clock), key="bad")
    flaky = email_job(new_contact(db, clock, email="bob@example.com"), key="flaky")

    async def scenario() -> None:
        try:
            with pytest.raises(ProviderError) as first:
                await delivery.send_email(bad)
            assert first.value.permanent
            with pytest.raises(ProviderError) as second:
                await delivery.send_email(flaky)
            assert not second.value.permanent
            await delivery.send_email(flaky)
        finally:
            await client.aclose()

    asyncio.run(scenario())
    assert len(fake.accepted) == 1
    assert message(db, "bad")["status"] == "failed"
    assert message(db, "flaky")["status"] == "sent"


# -- dry run, rate limits ---------------------------------------------------------------------


def test_dry_run_makes_zero_http_requests(
    database_url: str, db: Database, clock: VirtualClock
) -> None:
    requests: list[httpx.Request] = []

    def refuse(request: httpx.Request) -> httpx.Response:
        requests.append(request)
        raise AssertionError("dry run made an HTTP request")

    settings = Settings(
        database_url=database_url,
        dry_run=True,
        email_provider="resend",
        resend_api_key="re_live",
        sms_provider="brevo",
        brevo_api_key="bk_live",
        secret_key="s",
    )
    services = build_delivery(
        settings, db, clock, pack=default_pack(), transport=httpx.MockTransport(refuse)
    )
    assert services.client is None
    cid = new_contact(db, clock, phone="+33600000001")
    asyncio.run(services.delivery.send_email(email_job(cid)))
    asyncio.run(services.delivery.send_sms(Job("sms", {"text": "hi", "contact_id": cid})))
    assert requests == []
    assert len(services.delivery.email.sent) == 1  # type: ignore[attr-defined]
    assert message(db, "rule:1:purchase:1")["provider"] == "recording"


def test_rate_limit_bucket_is_shared_through_the_database(
    db: Database, clock: VirtualClock
) -> None:
    def take() -> float:
        with db.begin() as conn:
            return rate_limits.take(conn, "email:resend", 2.0, 2, clock.now())

    assert take() == 0 and take() == 0  # the burst
    wait = take()
    assert wait == pytest.approx(0.5)
    clock.advance(timedelta(seconds=0.5))
    assert take() == 0
    assert take() == pytest.approx(0.5)

    # A provider's Retry-After holds the bucket: the next token is that far away for everyone,
    # and a shorter hold later does not shorten it.
    def hold(seconds: float) -> None:
        with db.begin() as conn:
            rate_limits.hold(conn, "email:resend", 2.0, 2, seconds, clock.now())

    hold(30)
    assert take() == pytest.approx(30)
    hold(5)
    clock.advance(timedelta(seconds=10))
    assert take() == pytest.approx(20)
    clock.advance(timedelta(seconds=20))
    assert take() == 0


def test_contact_state_is_not_touched_by_suppress(db: Database, clock: VirtualClock) -> None:
    cid = new_contact(db, clock)
    with db.begin() as conn:
        contact = contact_store.load(conn, cid)
        assert isinstance(contact, ContactState)
        assert suppression.suppress(conn, contact, "complained", clock.now())
        assert not suppression.suppress(conn, contact, "complained", clock.now())
        contact.status = "complained"
        assert suppression.unsuppress(conn, contact) == 1
        assert contact.status == "subscribed" and contact.dirty


def limited(db: Database, clock: VirtualClock, channel: object) -> Delivery:
    """A Delivery whose e-mail bucket (2/s, burst 2) is shared through ``db``; it never sleeps
    for a token (the virtual clock stands still): a wait gives the job back instead."""
    delivery = make_delivery(db, clock, channel)  # type: ignore[arg-type]
    delivery.email_limiter = RateLimiter(db, clock, "email:resend", 2.0, 2, max_wait=0)
    return delivery


def test_two_workers_share_one_provider_rate_limit(
    database_url: str, db: Database, clock: VirtualClock
) -> None:
    """Two workers, each with its own engine (connections), as two processes would be: the
    bucket in the database lets exactly its burst through at a frozen instant."""
    other = Database(database_url)
    try:
        a, b = RecordingEmail(), RecordingEmail()
        first, second = limited(db, clock, a), limited(other, clock, b)
        ids = [new_contact(db, clock, email=f"c{i}@example.com") for i in range(6)]

        async def both() -> list[BaseException | None]:
            runs = [
                (first if i % 2 else second).send_email(email_job(cid, key=f"k{i}"))
                for i, cid in enumerate(ids)
            ]
            return await asyncio.gather(*runs, return_exceptions=True)

        outcomes = asyncio.run(both())
        refused = [i for i, o in enumerate(outcomes) if isinstance(o, ProviderError)]
        assert len(a.sent) + len(b.sent) == 2
        assert len(refused) == 4
        assert all(
            "local rate limit" in str(outcomes[i]) and outcomes[i].retry_after  # type: ignore[union-attr]
            for i in refused
        )
        clock.advance(timedelta(seconds=1))  # two more tokens
        asyncio.run(first.send_email(email_job(ids[refused[0]], key=f"k{refused[0]}")))
        asyncio.run(second.send_email(email_job(ids[refused[1]], key=f"k{refused[1]}")))
        assert len(a.sent) + len(b.sent) == 4
        with pytest.raises(ProviderError, match="local rate limit"):
            asyncio.run(first.send_email(email_job(ids[refused[2]], key=f"k{refused[2]}")))
    finally:
        other.dispose()


def test_a_providers_retry_after_pauses_every_worker(
    database_url: str, db: Database, clock: VirtualClock
) -> None:
    """Resend answers 429 with Retry-After: 20 to one worker; the other worker sends nothing
    before those 20 s are over (its job is given back), then both resume."""
    fake = FakeResend(script=[httpx.Response(429, headers={"retry-after": "20"}, json={})])
    other = Database(database_url)
    client = new_client(5.0, fake.transport())
    try:
        first = limited(db, clock, ResendEmail(fake.api_key, client))
        second = limited(other, clock, ResendEmail(fake.api_key, client))
        ann, bob = new_contact(db, clock), new_contact(db, clock, email="bob@example.com")

        async def scenario() -> None:
            with pytest.raises(ProviderError) as throttled:
                await first.send_email(email_job(ann, key="ann"))
            assert throttled.value.retry_after == 20
            with pytest.raises(ProviderError, match="local rate limit") as held:
                await second.send_email(email_job(bob, key="bob"))
            assert held.value.retry_after == pytest.approx(20, abs=0.01)
            assert len(fake.requests) == 1
            clock.advance(timedelta(seconds=20))
            await second.send_email(email_job(bob, key="bob"))
            clock.advance(timedelta(seconds=1))
            await first.send_email(email_job(ann, key="ann"))

        async def run() -> None:
            try:
                await scenario()
            finally:
                await client.aclose()

        asyncio.run(run())
        assert len(fake.accepted) == 2
        assert message(db, "ann")["status"] == "sent" and message(db, "bob")["status"] == "sent"
    finally:
        other.dispose()


# -- SMS --------------------------------------------------------------------------------------


def test_brevo_sms_request_matches_the_documented_api(db: Database, clock: VirtualClock) -> None:
    """``POST /v3/transactionalSMS/sms`` (sender, recipient, content, type, tag): Brevo's
    synchronous transactional SMS call, answering 201 with a numeric ``messageId``."""
    seen: list[httpx.Request] = []

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        assert request.method == "POST"
        assert request.url == "https://api.brevo.com/v3/transactionalSMS/sms"
        assert request.headers["api-key"] == "bk_sms"
        assert request.headers["content-type"] == "application/json"
        body = orjson.loads(request.content)
        assert set(body) <= {
            "sender",
            "recipient",
            "content",
            "type",
            "tag",
            "webUrl",
            "unicodeEnabled",
            "organisationPrefix",
        }
        assert len(body["sender"]) <= 11 and body["recipient"] and body["content"]
        if len(seen) == 1:
            return httpx.Response(429, headers={"retry-after": "3"}, json={"code": "too_many"})
        return httpx.Response(
            201, json={"messageId": 1511882900176220, "reference": "ab1c", "smsCount": 1}
        )

    client = new_client(5.0, httpx.MockTransport(handle))
    delivery = make_delivery(db, clock, RecordingEmail())
    delivery.sms = BrevoSms("bk_sms", client)
    cid = new_contact(db, clock, phone="+33611223344")
    job = Job(
        "rule:5:reminder:0",
        {"text": "Rappel: appel demain, {{ contact.first_name }}", "contact_id": cid},
    )

    async def scenario() -> None:
        try:
            with pytest.raises(ProviderError) as throttled:
                await delivery.send_sms(job)
            assert not throttled.value.permanent and throttled.value.retry_after == 3
            await delivery.send_sms(job)
        finally:
            await client.aclose()

    asyncio.run(scenario())
    body = orjson.loads(seen[-1].content)
    row = message(db, job.key)
    assert body == {
        "sender": "nurture",
        "recipient": "+33611223344",
        "content": "Rappel: appel demain, Ann",
        "type": "marketing",
        "tag": f"nurture-{row['id']}",
        "unicodeEnabled": True,
    }
    assert row["status"] == "sent" and row["provider"] == "brevo"
    assert row["provider_message_id"] == "1511882900176220"


def test_console_sms_writes_one_file_per_message(
    db: Database, clock: VirtualClock, tmp_path: Path
) -> None:
    delivery = make_delivery(db, clock, RecordingEmail())
    delivery.sms = ConsoleSms(tmp_path / "outbox")
    cid = new_contact(db, clock, phone="+33611223344")
    job = Job("seq:3:sms-1", {"text": "Bonjour {{ contact.first_name }}", "contact_id": cid})
    asyncio.run(delivery.send_sms(job))
    asyncio.run(delivery.send_sms(job))  # a replay: settled, no second file
    [written] = list((tmp_path / "outbox").iterdir())
    assert written.read_text() == "To: +33611223344\nFrom: nurture\n\nBonjour Ann\n"
    assert message(db, job.key)["status"] == "sent"
