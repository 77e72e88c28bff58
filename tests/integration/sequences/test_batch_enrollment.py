"""Enrolling from the event processor (``defer=True`` through a ``ContextSink``), on SQLite and
PostgreSQL. On PostgreSQL the enrollments themselves wait for the batch's insert (their ids are
reserved up front), so every refusal is found at that insert and its timeline note corrected
there; on SQLite each is inserted at once. Either way the batch must end with the same rows and
the same notes as enrolling one at a time."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Connection, func, select

from nurture.core.contacts import ContactState
from nurture.core.events import ContactRef, StoredEvent
from nurture.database.engine import Database
from nurture.intake.context import ProcessingContext
from nurture.intake.deferred import DeferredWrites
from nurture.pack import load_pack
from nurture.schema.tables import enrollment_steps, enrollments, jobs
from nurture.sequences import SequenceService, load_book, step_key
from nurture.sequences.sinks import ContextSink, DirectSink
from nurture.storage import contacts as contact_store
from nurture.storage import enrollments as store
from nurture.storage import jobs as job_store
from tests.conftest import START

SEQUENCES = """
sequences:
  - id: drip
    steps:
      - {id: one, at: 0h, send_email: thank_you}
      - {id: two, at: 24h, send_email: thank_you}
      - {id: three, at: 72h, send_email: thank_you}
  - id: meeting
    key: event.data.booking_uid
    anchor: event.data.start_time
    cancel_on: [booking.cancelled]
    steps:
      - {id: day-before, at: -24h, send_email: thank_you}
"""


@pytest.fixture
def service(tmp_path: Path) -> SequenceService:
    (tmp_path / "sequences.yaml").write_text(SEQUENCES)
    return SequenceService(load_book(load_pack(tmp_path)))


@pytest.fixture
def people(db: Database) -> list[ContactState]:
    with db.begin() as conn:
        return contact_store.create_many(conn, [f"p{i}@example.com" for i in range(4)], START)


class Batch:
    """One processing batch: a context per event, sharing the batch's deferred writes."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.later = DeferredWrites()
        self.contexts: list[ProcessingContext] = []

    def context(self, contact: ContactState) -> ProcessingContext:
        n = len(self.contexts) + 1
        event = StoredEvent(
            id=n,
            source="test",
            type="form.submitted",
            partition=0,
            contact=ContactRef(email=contact.email),
            data={},
            occurred_at=START,
            received_at=START,
        )
        ctx = ProcessingContext(self.conn, event, contact, START, later=self.later)
        self.contexts.append(ctx)
        return ctx

    def enroll(
        self, service: SequenceService, contact: ContactState, sequence: str = "drip", **kw: Any
    ) -> Any:
        ctx = self.context(contact)
        key = kw.pop("key", f"contact:{contact.id}")
        return service.enroll(
            self.conn,
            service.sequence(sequence),
            contact,
            key,
            now=START,
            sink=ContextSink(ctx),
            event_id=ctx.event.id,
            defer=True,
            **kw,
        )

    def notes(self) -> list[tuple[str, dict[str, Any]]]:
        return [(n["kind"], n["detail"]) for ctx in self.contexts for n in ctx.timeline]


def counts(db: Database) -> tuple[int, int, int]:
    with db.read() as conn:
        return tuple(  # type: ignore[return-value]
            conn.execute(select(func.count()).select_from(t)).scalar_one()
            for t in (enrollments, enrollment_steps, jobs)
        )


def test_a_batch_of_enrolments_writes_what_one_at_a_time_writes(
    db: Database, service: SequenceService, people: list[ContactState]
) -> None:
    with db.begin() as conn:
        batch = Batch(conn)
        results = [batch.enroll(service, p) for p in people]
        waiting = conn.execute(select(func.count()).select_from(enrollments)).scalar_one()
        batch.later.flush(conn, START)
    # PostgreSQL: one insert for the batch's enrollments, at its end; SQLite: one each, at once.
    assert waiting == (0 if db.dialect == "postgresql" else len(people))
    ids = [r.enrollment_id for r in results]
    assert all(r.status == "enrolled" for r in results) and len(set(ids)) == len(people)
    assert [(k, d["enrollment_id"]) for k, d in batch.notes()] == [
        ("sequence.enrolled", i) for i in ids
    ]
    assert counts(db) == (4, 12, 12)
    with db.read() as conn:
        for person, eid in zip(people, ids, strict=True):
            row = store.get(conn, eid)
            assert row is not None
            assert (row["contact_id"], row["key"], row["status"]) == (
                person.id,
                f"contact:{person.id}",
                "active",
            )
            assert (row["anchor_at"], row["enrolled_at"], row["reschedules"]) == (START, START, 0)
            assert [s["step_id"] for s in store.steps(conn, [eid])[eid]] == ["one", "two", "three"]
            job = job_store.get_by_key(conn, step_key(eid, "three"))
            assert job is not None and job["run_at"] == START + timedelta(hours=72)


def test_refusals_found_at_the_batch_insert_are_noted_as_such_and_plan_nothing(
    db: Database, service: SequenceService, people: list[ContactState]
) -> None:
    ann, bob, cat, _ = people
    meeting = START + timedelta(days=3)
    with db.begin() as conn:
        earlier = service.enroll(
            conn,
            service.sequence("drip"),
            ann,
            f"contact:{ann.id}",
            now=START,
            sink=DirectSink(conn, ann, START, 64),
        )
        service.cancel(
            conn,
            service.sequence("meeting"),
            "bk_1",
            reason="cancelled",
            now=START,
            sink=DirectSink(conn, bob, START, 64),
        )
    with db.begin() as conn:
        batch = Batch(conn)
        batch.enroll(service, ann)  # live already
        batch.enroll(service, bob, "meeting", key="bk_1", anchor=meeting)  # tombstoned
        fresh = batch.enroll(service, cat)
        batch.later.flush(conn, START)
    assert batch.notes() == [
        (
            "sequence.not_enrolled",
            {
                "sequence": "drip",
                "key": f"contact:{ann.id}",
                "reason": "already enrolled",
                "enrollment_id": earlier.enrollment_id,
            },
        ),
        (
            "sequence.not_enrolled",
            {
                "sequence": "meeting",
                "key": "bk_1",
                "reason": "cancelled before it arrived (tombstone)",
            },
        ),
        ("sequence.enrolled", batch.notes()[2][1]),
    ]
    assert batch.notes()[2][1]["enrollment_id"] == fresh.enrollment_id
    # Only the earlier enrollment and cat's: nothing planned for the refused ones.
    assert counts(db) == (2, 6, 6)
    with db.read() as conn:
        planned = {r.enrollment_id for r in conn.execute(select(jobs.c.enrollment_id))}
    assert planned == {earlier.enrollment_id, fresh.enrollment_id}


def test_the_same_key_twice_in_one_batch_enrols_once(
    db: Database, service: SequenceService, people: list[ContactState]
) -> None:
    ann = people[0]
    with db.begin() as conn:
        batch = Batch(conn)
        first = batch.enroll(service, ann)
        again = batch.enroll(service, ann)
        batch.later.flush(conn, START)
    assert (again.status, again.enrollment_id) == ("duplicate", first.enrollment_id)
    assert [k for k, _ in batch.notes()] == ["sequence.enrolled", "sequence.not_enrolled"]
    assert counts(db) == (1, 3, 3)


def test_an_exit_later_in_the_batch_ends_an_enrolment_still_waiting(
    db: Database, service: SequenceService, people: list[ContactState]
) -> None:
    ann = people[0]
    with db.begin() as conn:
        batch = Batch(conn)
        enrolled = batch.enroll(service, ann)
        ctx = batch.context(ann)
        ended = service.exit_contact(conn, ann.id, ["drip"], "bought", START, ContextSink(ctx))
        batch.later.flush(conn, START)
    assert ended == 1
    with db.read() as conn:
        row = store.get(conn, enrolled.enrollment_id)
        steps = store.steps(conn, [enrolled.enrollment_id])[enrolled.enrollment_id]
        statuses = {r.status for r in conn.execute(select(jobs.c.status))}
    assert row is not None and row["status"] == "exited"
    assert {s["status"] for s in steps} == {"cancelled"}
    assert statuses == {"cancelled"}
