"""``SequenceService.enroll`` against the database, on SQLite and PostgreSQL: what one enrolment
writes (the enrollment, a row per step, a job per scheduled step, all with the planned times),
and every way it refuses (duplicate, tombstone, re-entry policies) without writing anything.

The enrolment inserts are written at the driver level (``storage.enrollments``), so these tests
also pin that their rows read back through Core exactly as Core would have written them."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import func, select

from nurture.core.contacts import ContactState
from nurture.database.engine import Database
from nurture.pack import load_pack
from nurture.schema.tables import enrollment_steps, enrollments, jobs
from nurture.sequences import SequenceService, load_book, step_key
from nurture.sequences.sinks import Sink
from nurture.storage import contacts as contact_store
from nurture.storage import enrollments as store
from nurture.storage import jobs as job_store
from tests.conftest import START

TORONTO = ZoneInfo("America/Toronto")
SEQUENCES = """
sequences:
  - id: drip
    steps:
      - {id: one, at: 0h, send_email: thank_you}
      - {id: two, at: 24h, send_email: thank_you}
      - {id: three, at: 72h, send_email: thank_you}
  - id: once
    reentry: never
    steps:
      - {id: one, at: 1h, send_email: thank_you}
  - id: again
    reentry: always
    steps:
      - {id: one, at: 1h, send_email: thank_you}
  - id: meeting
    key: event.data.booking_uid
    anchor: event.data.start_time
    min_lead: 2h
    cancel_on: [booking.cancelled]
    steps:
      - {id: day-before, at: -24h, send_email: thank_you}
      - {id: final, at: -2h, send_email: thank_you, exact: true}
"""


class Notes(Sink):
    """A sink that keeps what it is told."""

    def __init__(self) -> None:
        self.notes: list[tuple[str, dict[str, Any]]] = []
        self.events: list[tuple[str, dict[str, Any]]] = []

    def note(self, kind: str, detail: dict[str, Any], rule_id: str | None = None) -> None:
        self.notes.append((kind, detail))

    def emit(self, type_: str, data: dict[str, Any]) -> None:
        self.events.append((type_, data))


@pytest.fixture
def service(tmp_path: Path) -> SequenceService:
    (tmp_path / "sequences.yaml").write_text(SEQUENCES)
    return SequenceService(load_book(load_pack(tmp_path)))


@pytest.fixture
def contact(db: Database) -> ContactState:
    with db.begin() as conn:
        return contact_store.create(conn, "ann@example.com", START)


def enroll(
    db: Database,
    service: SequenceService,
    contact: ContactState,
    sequence: str,
    key: str | None = None,
    **kw: Any,
) -> tuple[Any, Notes]:
    sink = Notes()
    with db.begin() as conn:
        out = service.enroll(
            conn,
            service.sequence(sequence),
            contact,
            key or f"contact:{contact.id}",
            now=kw.pop("now", START),
            sink=sink,
            **kw,
        )
    return out, sink


def counts(db: Database) -> tuple[int, int, int]:
    with db.read() as conn:
        return tuple(  # type: ignore[return-value]
            conn.execute(select(func.count()).select_from(t)).scalar_one()
            for t in (enrollments, enrollment_steps, jobs)
        )


def test_enrolment_writes_the_enrollment_its_steps_and_their_jobs(
    db: Database, service: SequenceService, contact: ContactState
) -> None:
    out, sink = enroll(db, service, contact, "drip", event_id=42, rule_id="r1")
    assert out.status == "enrolled" and out.enrollment_id is not None
    eid = out.enrollment_id
    due = [START, START + timedelta(hours=24), START + timedelta(hours=72)]
    with db.read() as conn:
        row = store.get(conn, eid)
        steps = store.steps(conn, [eid])[eid]
        planned = [job_store.get_by_key(conn, step_key(eid, s)) for s in ("one", "two", "three")]
    assert row is not None
    assert (row["sequence_id"], row["key"], row["status"]) == (
        "drip",
        f"contact:{contact.id}",
        "active",
    )
    assert (row["anchor_at"], row["enrolled_at"], row["rule_id"], row["reschedules"]) == (
        START,
        START,
        "r1",
        0,
    )
    assert row["contact_id"] == contact.id and row["event_id"] == 42
    assert [(s["step_id"], s["position"], s["status"], s["due_at"]) for s in steps] == [
        ("one", 0, "scheduled", due[0]),
        ("two", 1, "scheduled", due[1]),
        ("three", 2, "scheduled", due[2]),
    ]
    assert all(s["updated_at"] == START and s["ran_at"] is None for s in steps)
    assert all(s["due_at"].tzinfo is not None for s in steps)
    assert [
        (j["kind"], j["status"], j["run_at"], j["enrollment_id"], j["contact_id"])
        for j in planned
        if j is not None
    ] == [("sequence_step", "scheduled", d, eid, contact.id) for d in due]
    assert planned[1] is not None and planned[1]["payload"] == {
        "enrollment_id": eid,
        "step_id": "two",
        "contact_id": contact.id,
    }
    # The driver-level text sorts with what Core writes: move one step through Core, reorder.
    with db.begin() as conn:
        moved = {"due_at": START + timedelta(hours=1), "updated_at": START}
        assert store.update_step(conn, eid, "three", moved)
        order = conn.execute(
            select(enrollment_steps.c.step_id).order_by(enrollment_steps.c.due_at)
        ).scalars()
        assert list(order) == ["one", "three", "two"]
        after = select(func.count()).where(enrollment_steps.c.due_at > START)
        assert conn.execute(after).scalar_one() == 2
    [(kind, detail)] = sink.notes
    assert kind == "sequence.enrolled" and [s["step"] for s in detail["steps"]] == [
        "one",
        "two",
        "three",
    ]


def test_a_live_duplicate_is_a_no_op_that_names_the_enrollment(
    db: Database, service: SequenceService, contact: ContactState
) -> None:
    first, _ = enroll(db, service, contact, "drip")
    again, sink = enroll(db, service, contact, "drip", now=START + timedelta(hours=1))
    assert (again.status, again.enrollment_id) == ("duplicate", first.enrollment_id)
    assert sink.notes == [
        (
            "sequence.not_enrolled",
            {
                "sequence": "drip",
                "key": f"contact:{contact.id}",
                "reason": "already enrolled",
                "enrollment_id": first.enrollment_id,
            },
        )
    ]
    assert counts(db) == (1, 3, 3)


def test_a_tombstone_refuses_the_late_booking(
    db: Database, service: SequenceService, contact: ContactState
) -> None:
    seq = service.sequence("meeting")
    with db.begin() as conn:
        assert not service.cancel(conn, seq, "bk_1", reason="cancelled", now=START, sink=Notes())
    meeting = START + timedelta(days=3)
    out, sink = enroll(db, service, contact, "meeting", "bk_1", anchor=meeting)
    assert (out.status, out.enrollment_id) == ("tombstoned", None)
    assert sink.notes[0][1]["reason"] == "cancelled before it arrived (tombstone)"
    assert counts(db) == (0, 0, 0)
    # Another booking of the same contact is not affected.
    other, _ = enroll(db, service, contact, "meeting", "bk_2", anchor=meeting)
    assert other.status == "enrolled"


def test_reentry_after_exit_never_and_always(
    db: Database, service: SequenceService, contact: ContactState
) -> None:
    later = START + timedelta(hours=1)
    for sequence in ("drip", "once"):
        first, _ = enroll(db, service, contact, sequence)
        with db.begin() as conn:
            assert service.exit_contact(conn, contact.id, [sequence], "test", START, Notes()) == 1
    back, _ = enroll(db, service, contact, "drip", now=later)  # after_exit: enrols again
    assert back.status == "enrolled"
    refused, _ = enroll(db, service, contact, "once", now=later)
    assert refused.status == "not_reentering"

    first, _ = enroll(db, service, contact, "again")
    second, sink = enroll(db, service, contact, "again", now=later)
    assert second.status == "enrolled" and second.enrollment_id != first.enrollment_id
    assert [k for k, _ in sink.notes] == ["sequence.exited", "sequence.enrolled"]
    with db.read() as conn:
        old = store.get(conn, first.enrollment_id)
        old_steps = store.steps(conn, [first.enrollment_id])[first.enrollment_id]
    assert old is not None and (old["status"], old["end_reason"]) == ("exited", "re-entered")
    assert [s["status"] for s in old_steps] == ["cancelled"]


def test_past_steps_are_recorded_as_skipped_without_a_job(
    db: Database, service: SequenceService, contact: ContactState
) -> None:
    meeting = START + timedelta(hours=10)  # the 24 h reminder is already past
    out, _ = enroll(db, service, contact, "meeting", "bk_1", anchor=meeting)
    eid = out.enrollment_id
    with db.read() as conn:
        steps = {s["step_id"]: s for s in store.steps(conn, [eid])[eid]}
        planned = job_store.search(conn, kind="sequence_step")
    assert steps["day-before"]["status"] == "skipped"
    assert steps["day-before"]["reason"].startswith("past:")
    assert steps["final"]["status"] == "scheduled"
    assert [j["key"] for j in planned] == [step_key(eid, "final")]

    # Too near for any step: enrolled (the booking is recorded), nothing planned, completed.
    soon, sink = enroll(db, service, contact, "meeting", "bk_2", anchor=START + timedelta(hours=1))
    with db.read() as conn:
        row = store.get(conn, soon.enrollment_id)
    assert soon.status == "enrolled" and row is not None and row["status"] == "completed"
    assert [k for k, _ in sink.notes] == ["sequence.enrolled", "sequence.completed"]
    assert counts(db)[2] == 1


def test_naive_times_are_refused(db: Database, contact: ContactState) -> None:
    values = {
        "sequence_id": "drip",
        "key": "k",
        "contact_id": contact.id,
        "anchor_at": START.replace(tzinfo=None),
        "enrolled_at": START,
        "event_id": None,
        "rule_id": None,
        "reschedules": 0,
    }
    with pytest.raises(ValueError, match="naive"), db.begin() as conn:
        store.insert_live(conn, values)


def test_more_steps_than_one_statement_holds_are_all_written(
    db: Database, contact: ContactState
) -> None:
    values = {
        "sequence_id": "long",
        "key": "k",
        "contact_id": contact.id,
        "anchor_at": START,
        "enrolled_at": START,
        "event_id": None,
        "rule_id": None,
        "reschedules": 0,
    }
    steps = [
        {
            "step_id": f"s{i}",
            "position": i,
            "status": "scheduled",
            # Any offset and microseconds survive both drivers' encodings.
            "due_at": (START + timedelta(minutes=i, microseconds=i)).astimezone(TORONTO),
            "reason": None,
            "updated_at": START,
        }
        for i in range(2500)
    ]
    with db.begin() as conn:
        eid = store.insert_live(conn, values)
        assert eid is not None
        store.insert_steps(conn, [{**step, "enrollment_id": eid} for step in steps])
        assert store.insert_live(conn, values) is None  # live already: nothing written
    with db.read() as conn:
        rows = store.steps(conn, [eid])[eid]
    assert [r["step_id"] for r in rows] == [f"s{i}" for i in range(2500)]
    assert [r["due_at"] for r in rows] == [s["due_at"] for s in steps]
    assert rows[-1]["due_at"].utcoffset() == timedelta(0)
    assert counts(db) == (1, 2500, 0)
