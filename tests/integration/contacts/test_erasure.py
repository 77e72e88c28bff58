"""Erasure (GDPR) on both databases: what goes, what stays, and a send running meanwhile."""

from __future__ import annotations

import asyncio
import threading
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select

from nurture.clock import VirtualClock
from nurture.contacts import erasure, suppression
from nurture.core.events import email_hash
from nurture.database.engine import Database
from nurture.errors import NotFound
from nurture.schema.tables import metadata
from nurture.storage import audit, jobs, messages, tasks
from nurture.storage import contacts as contact_store
from nurture.testing import RecordingEmail
from tests.helpers import email_job, make_delivery, new_contact

ANN = "ann.private@example.com"


def dump(db: Database) -> str:
    """Every row of every table, as text: what a search for the address would find."""
    out = []
    with db.read() as conn:
        for table in metadata.sorted_tables:
            out.extend(repr(dict(r)) for r in conn.execute(select(table)).mappings())
    return "\n".join(out)


def seed(db: Database, clock: VirtualClock) -> int:
    now = clock.now()
    cid = new_contact(db, clock, ANN, last_name="Privatova", phone="+33600000001")
    new_contact(db, clock, "bob@example.com")  # so SQLite does not hand the erased id out again
    with db.begin() as conn:
        contact_store.add_identities(conn, cid, {"client_code": "CLIENT-ANN"})
        jobs.insert(
            conn,
            {
                "kind": "send_email",
                "key": "rule:9:ann",
                "status": "scheduled",
                "run_at": now + timedelta(days=1),
                "payload": {"contact_id": cid, "vars": {"email": ANN}},
                "contact_id": cid,
                "created_at": now,
                "updated_at": now,
            },
        )
        tasks.create(
            conn,
            {
                "key": "task:ann",
                "contact_id": cid,
                "title": f"Call {ANN}",
                "kind": "call",
                "due_at": now,
                "created_at": now,
            },
        )
        contact = contact_store.load(conn, cid)
        assert contact is not None
        suppression.suppress(conn, contact, "unsubscribed", now)
    return cid


def test_erase_removes_every_trace_and_keeps_a_hashed_suppression(
    db: Database, clock: VirtualClock
) -> None:
    cid = seed(db, clock)
    channel = RecordingEmail()
    asyncio.run(make_delivery(db, clock, channel).send_email(email_job(cid, transactional=True)))
    assert [m.to for m in channel.sent] == [ANN]
    before = dump(db)
    assert ANN in before and "Privatova" in before and "CLIENT-ANN" in before

    report = erasure.erase_contact(db, cid, actor="cli:tester", now=clock.now())

    after = dump(db)
    for secret in (ANN, "Privatova", "+33600000001", "CLIENT-ANN"):
        assert secret not in after
    assert report.jobs_cancelled == 1 and report.messages_redacted == 1
    assert report.deleted["contacts"] == 1 and report.deleted["tasks"] == 1
    assert report.deleted["identities"] == 1
    with db.read() as conn:
        assert contact_store.load(conn, cid) is None
        # Keys are freed: a later contact reusing the id must not find its send already done.
        assert jobs.get_by_key(conn, "rule:9:ann") is None
        assert messages.get_by_key(conn, "rule:1:purchase:1") is None
        [job] = jobs.search(conn, status="cancelled")
        assert job["key"] == f"erased:{job['id']}" and job["payload"] == {"erased": True}
        [message] = messages.search(conn)
        assert message["status"] == "sent" and message["key"] == f"erased:{message['id']}"
        assert message["to_address"] is None and message["contact_id"] is None
        # The hash stays, both reasons, with no contact id a new contact could inherit.
        assert suppression.check(conn, None, ANN, transactional=True) == "erased"
        [entry] = audit.recent(conn, target_kind="contact", target_id=str(cid))
    assert report.email_hash == email_hash(ANN)
    assert entry["actor"] == "cli:tester" and entry["action"] == "contact.erase"
    assert entry["detail"]["deleted"]["contacts"] == 1 and entry["id"] == report.audit_id
    with pytest.raises(NotFound):
        erasure.erase_contact(db, cid, actor="cli:tester", now=clock.now())


def test_address_erased_then_recreated_starts_suppressed_and_gets_nothing(
    db: Database, clock: VirtualClock
) -> None:
    cid = seed(db, clock)
    erasure.erase_contact(db, cid, actor="key:ops", now=clock.now())
    with db.begin() as conn:
        [again] = contact_store.create_many(conn, [ANN], clock.now())
        assert suppression.carry_over(conn, [again]) == 1
        contact_store.save_many(conn, [again], clock.now())
    assert again.status == "unsubscribed"
    channel = RecordingEmail()
    delivery = make_delivery(db, clock, channel)
    asyncio.run(delivery.send_email(email_job(again.id, key="k1")))
    asyncio.run(delivery.send_email(email_job(again.id, key="k2", transactional=True)))
    assert channel.sent == []


def test_export_holds_everything_and_is_audited(db: Database, clock: VirtualClock) -> None:
    cid = seed(db, clock)
    data = erasure.export_contact(db, cid, actor="key:dpo", now=clock.now(), client_addr="10.0.0.9")
    assert data["format"] == "nurture.contact-export/1"
    assert data["contact"]["email"] == ANN and data["contact"]["last_name"] == "Privatova"
    assert [(i["kind"], i["value"]) for i in data["identities"]] == [("client_code", "CLIENT-ANN")]
    assert [t["title"] for t in data["tasks"]] == [f"Call {ANN}"]
    assert [j["key"] for j in data["jobs"]] == ["rule:9:ann"]
    assert [s["reason"] for s in data["suppressions"]] == ["unsubscribed"]
    assert isinstance(data["exported_at"], str)
    with db.read() as conn:
        [entry] = audit.recent(conn, target_kind="contact", target_id=str(cid))
    assert entry["action"] == "contact.export" and entry["actor"] == "key:dpo"
    assert entry["client_addr"] == "10.0.0.9"


class GatedLimiter:
    """A rate limiter that holds the send between its checks and its claim until released."""

    def __init__(self) -> None:
        self.waiting = threading.Event()
        self.release = threading.Event()

    async def acquire(self) -> None:
        self.waiting.set()
        await asyncio.to_thread(self.release.wait, 30)

    async def acquire_up_to(self, wanted: int) -> tuple[int, float]:
        """The batch path's limiter call, between a batch's checks and its claim."""
        await self.acquire()
        return wanted, 0.0

    async def pause(self, seconds: float | None) -> None:
        return None


def _run_in_thread(target: Any) -> tuple[threading.Thread, list[BaseException]]:
    errors: list[BaseException] = []

    def run() -> None:
        try:
            target()
        except BaseException as exc:  # surfaced by the test
            errors.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    return thread, errors


def test_erase_between_the_send_checks_and_its_claim_sends_nothing(
    db: Database, clock: VirtualClock
) -> None:
    cid = seed(db, clock)
    channel = RecordingEmail()
    gate = GatedLimiter()
    delivery = make_delivery(db, clock, channel)
    delivery.email_limiter = gate  # type: ignore[assignment]
    job = email_job(cid, key="k-racing")
    suppression_free = job.payload | {"transactional": True}  # past the marketing opt-out
    thread, errors = _run_in_thread(
        lambda: asyncio.run(delivery.send_email(type(job)(job.key, suppression_free)))
    )
    assert gate.waiting.wait(30)  # checks passed, the claim has not happened
    erasure.erase_contact(db, cid, actor="cli:tester", now=clock.now())
    gate.release.set()
    thread.join(30)
    assert not thread.is_alive() and errors == []
    assert channel.sent == []
    with db.read() as conn:
        row = messages.get_by_key(conn, "k-racing")
    assert row is not None and row["status"] == "skipped" and row["error"] == "contact erased"
    assert row["to_address"] is None and row["contact_id"] is None
    assert ANN not in dump(db)


def test_erase_while_the_provider_call_runs_keeps_the_message_without_the_address(
    db: Database, clock: VirtualClock
) -> None:
    cid = seed(db, clock)
    in_call, release = threading.Event(), threading.Event()

    def hold(_message: object) -> None:
        in_call.set()
        release.wait(30)

    channel = RecordingEmail(fail_with=hold)
    delivery = make_delivery(db, clock, channel)
    job = email_job(cid, key="k-in-flight", transactional=True)
    thread, errors = _run_in_thread(lambda: asyncio.run(delivery.send_email(job)))
    assert in_call.wait(30)  # the message row is claimed and committed; the provider has it
    report = erasure.erase_contact(db, cid, actor="cli:tester", now=clock.now())
    release.set()
    thread.join(30)
    assert not thread.is_alive() and errors == []
    assert [m.to for m in channel.sent] == [ANN]  # handed over before the erasure
    assert report.messages_redacted == 1
    with db.read() as conn:
        [row] = messages.search(conn)
    assert row["status"] == "sent" and row["provider_message_id"]
    assert row["to_address"] is None and row["subject"] is None
    assert ANN not in dump(db)


def test_a_claim_waits_for_an_erasure_in_progress(
    db: Database, clock: VirtualClock, database_url: str
) -> None:
    """The erasure's transaction is open (contact locked, not committed) when the send claims:
    the claim waits for it and then finds no contact."""
    cid = seed(db, clock)
    channel = RecordingEmail()
    delivery = make_delivery(db, clock, channel)
    gate = GatedLimiter()
    delivery.email_limiter = gate  # type: ignore[assignment]
    job = email_job(cid, key="k-blocked", transactional=True)
    thread, errors = _run_in_thread(lambda: asyncio.run(delivery.send_email(job)))
    assert gate.waiting.wait(30)
    with db.begin() as conn:
        erasure.erase_contact(conn, cid, actor="cli:tester", now=clock.now())
        gate.release.set()
        if db.is_sqlite:
            # One writer at a time: the claim cannot start until this transaction ends.
            pass
        else:
            _wait_until_blocked(db, conn)
    thread.join(30)
    assert not thread.is_alive() and errors == []
    assert channel.sent == []
    with db.read() as conn:
        row = messages.get_by_key(conn, "k-blocked")
    assert row is not None and row["status"] == "skipped" and row["to_address"] is None


def _wait_until_blocked(db: Database, holder: Any) -> None:
    """Until another backend waits on a lock this transaction holds (PostgreSQL)."""
    mine = holder.exec_driver_sql("SELECT pg_backend_pid()").scalar_one()
    with db.engine.connect() as probe:
        for _ in range(3000):
            blocked = probe.exec_driver_sql(
                "SELECT count(*) FROM pg_stat_activity WHERE %s = ANY(pg_blocking_pids(pid))",
                (mine,),
            ).scalar_one()
            probe.rollback()
            if blocked:
                return
            threading.Event().wait(0.01)
    raise AssertionError("the claim never waited for the erasure")


def test_a_contact_that_gets_the_erased_id_again_is_not_taken_for_the_erased_one(
    db: Database, clock: VirtualClock
) -> None:
    cid = new_contact(db, clock, ANN)  # the highest id: SQLite hands it out again
    channel = RecordingEmail()
    delivery = make_delivery(db, clock, channel)
    asyncio.run(delivery.send_email(email_job(cid, key="welcome:contact")))
    erasure.erase_contact(db, cid, actor="cli:tester", now=clock.now())
    clock.advance(timedelta(minutes=1))
    newcomer = new_contact(db, clock, "carol@example.com")
    asyncio.run(delivery.send_email(email_job(newcomer, key="welcome:contact")))
    assert [m.to for m in channel.sent] == [ANN, "carol@example.com"]
    export = erasure.export_contact(db, newcomer, actor="cli:tester", now=clock.now())
    assert export["audit"] == []  # the erasure of the earlier holder of the id is not hers
