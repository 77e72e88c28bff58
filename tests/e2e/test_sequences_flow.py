"""The two prototype sequences end to end: signed webhooks in (the assessment form, Cal.com),
the real processor and job worker on a virtual clock, e-mails out through the recording channel
(dry run), the messages and enrollments read back. The prototype's cases (prototypes.md §B4-B7,
Part C 11-16, 19) are the behaviours under test."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select

from nurture.bootstrap import build_job_worker
from nurture.clock import VirtualClock
from nurture.config import Settings
from nurture.jobs import JobWorker
from nurture.messaging.unsubscribe import make_token, signing_key
from nurture.pack import DEFAULTS_DIR
from nurture.schema.tables import enrollments, messages
from nurture.sequences import DirectSink, SequenceService
from nurture.sequences import load as load_sequences
from nurture.storage import api_keys
from nurture.storage import contacts as contact_store
from nurture.storage import enrollments as enrollment_store
from nurture.storage import jobs as job_store
from nurture.testing import Harness, calcom_request, harness, new_secret, standard_request

FORMS_SECRET = new_secret()
CALCOM_SECRET = "calcom-secret-for-sequences"
API_KEY = "nk_sequences_e2e"
AUTH = {"authorization": f"Bearer {API_KEY}"}
EMAIL = "ann@example.com"


class Flow:
    """A harness plus the job worker and a virtual clock that jumps from job to job."""

    def __init__(self, h: Harness, clock: VirtualClock) -> None:
        self.h = h
        self.clock = clock
        self.worker: JobWorker = build_job_worker(h.container)

    @property
    def db(self) -> Any:
        return self.h.container.db

    def signup(self, **fields: Any) -> None:
        body = {
            "email": EMAIL,
            "first_name": "Ann",
            "business_name": "Ann's Salon",
            "assessment_score": 62,
            "weakest_system_1": "Money",
            "weakest_system_2": "Serve",
            "revenue_leak_total": 12000,
            **fields,
        }
        raw, headers = standard_request(FORMS_SECRET, body, self.clock.now())
        r = self.h.client.post("/webhooks/forms/christmas-assessment", content=raw, headers=headers)
        assert r.status_code == 202, r.text

    def booking(self, trigger: str, uid: str, start: datetime, **extra: Any) -> None:
        payload = {
            "triggerEvent": trigger,
            "createdAt": self.clock.now().isoformat(),
            "payload": {
                "title": "Christmas Readiness Diagnostic",
                "startTime": start.isoformat(),
                "endTime": (start + timedelta(minutes=45)).isoformat(),
                "organizer": {"name": "Sam", "email": "sam@host.example", "timeZone": "UTC"},
                "attendees": [{"name": "Ann Lee", "email": EMAIL, "timeZone": "America/Toronto"}],
                "uid": uid,
                "metadata": {"videoCallUrl": f"https://app.cal.com/video/{uid}"},
                **extra,
            },
        }
        raw, headers = calcom_request(CALCOM_SECRET, payload)
        r = self.h.client.post("/webhooks/calcom", content=raw, headers=headers)
        assert r.status_code == 202, r.text

    def run(self, until: datetime | timedelta) -> None:
        """Process events and run every job due up to ``until``, jumping the clock."""
        end = self.clock.now() + until if isinstance(until, timedelta) else until
        kinds = self.worker.registry.kinds
        while True:
            self.h.process()
            asyncio.run(self.worker.drain())
            self.h.process()
            with self.db.read() as conn:
                nxt = job_store.next_run_at(conn, kinds)
            if nxt is None or nxt > end:
                break
            self.clock.set(max(nxt, self.clock.now()))
        if end > self.clock.now():
            self.clock.set(end)

    def sent(self) -> list[dict[str, Any]]:
        with self.db.read() as conn:
            rows = conn.execute(
                select(messages).where(messages.c.status == "sent").order_by(messages.c.id)
            ).mappings()
            return [dict(r) for r in rows]

    def templates(self) -> list[str]:
        return [m["template"] for m in self.sent()]

    def enrollments(self, sequence: str | None = None) -> list[dict[str, Any]]:
        with self.db.read() as conn:
            stmt = select(enrollments).order_by(enrollments.c.id)
            if sequence is not None:
                stmt = stmt.where(enrollments.c.sequence_id == sequence)
            return [dict(r) for r in conn.execute(stmt).mappings()]

    def steps(self, enrollment_id: int) -> dict[str, dict[str, Any]]:
        with self.db.read() as conn:
            rows = enrollment_store.steps(conn, [enrollment_id])[enrollment_id]
        return {r["step_id"]: r for r in rows}


@pytest.fixture
def flow(make_settings: Callable[..., Settings], clock: VirtualClock) -> Iterator[Flow]:
    settings = make_settings(
        forms_secret=FORMS_SECRET,
        calcom_webhook_secret=CALCOM_SECRET,
        automation_dir=DEFAULTS_DIR,
        dry_run=True,
    )
    with harness(settings, clock) as h:
        with h.container.db.begin() as conn:
            api_keys.create(conn, "sequences-e2e", API_KEY, clock.now())
        yield Flow(h, clock)


CHRISTMAS = [
    "christmas_email_1",
    "christmas_email_2_{}",
    "christmas_email_3",
    "christmas_email_4",
    "christmas_email_5",
    "christmas_email_6",
    "christmas_email_7_{}",
]


@pytest.mark.parametrize(
    ("counts", "segment"),
    [
        ({"red_systems": 2, "orange_systems": 0}, "critical"),
        ({"red_systems": 1, "orange_systems": 0}, "urgent"),
        ({"red_systems": 0, "orange_systems": 2}, "urgent"),
        ({"red_systems": 0, "orange_systems": 1}, "optimize"),
    ],
)
def test_christmas_sequence_routes_emails_2_and_7_by_segment(
    flow: Flow, counts: dict[str, int], segment: str
) -> None:
    start = flow.clock.now()
    flow.signup(**counts)
    flow.run(timedelta(days=12))
    sent = flow.sent()
    assert [m["template"] for m in sent] == [t.format(segment) for t in CHRISTMAS]
    offsets = [(m["sent_at"] - start) / timedelta(hours=1) for m in sent]
    assert offsets == [0, 24, 72, 120, 168, 216, 264]
    assert "{{" not in "".join(m["subject"] for m in sent)  # every placeholder rendered
    [enrollment] = flow.enrollments()
    assert enrollment["status"] == "completed"
    steps = flow.steps(enrollment["id"])
    # The prototype's "Email N Sent" columns.
    assert [s["sent_at"] for s in steps.values()] == [m["sent_at"] for m in sent]


def test_the_results_email_carries_the_assessment_values(flow: Flow) -> None:
    flow.signup(red_systems=2, orange_systems=1, yellow_systems=3, green_systems=2)
    flow.run(timedelta(minutes=1))
    [first] = flow.sent()
    assert (
        first["subject"] == "Ann, your Christmas readiness results: 62/100 ($12.0K/month leaking)"
    )


@pytest.mark.parametrize(
    ("hours_away", "reminders"),
    [
        (80, ["precall_72h", "precall_24h", "precall_2h"]),
        (50, ["precall_24h", "precall_2h"]),
        (24, ["precall_2h"]),
        (2.5, ["precall_2h"]),
        (2, []),
        (1, []),
    ],
)
def test_precall_reminders_depend_on_the_lead_time(
    flow: Flow, hours_away: float, reminders: list[str]
) -> None:
    meeting = flow.clock.now() + timedelta(hours=hours_away)
    flow.booking("BOOKING_CREATED", "bk_1", meeting)
    flow.run(meeting + timedelta(hours=1))
    sent = flow.sent()
    assert [m["template"] for m in sent] == reminders
    offsets = {m["template"]: (meeting - m["sent_at"]) / timedelta(hours=1) for m in sent}
    expected = {"precall_72h": 72, "precall_24h": 24, "precall_2h": 2}
    assert offsets == {t: expected[t] for t in reminders}
    # The booking is always recorded, even when it is too close for any reminder.
    [enrollment] = flow.enrollments("pre-call")
    assert enrollment["key"] == "bk_1" and enrollment["anchor_at"] == meeting
    if not reminders:
        assert enrollment["status"] == "completed"
        steps = flow.steps(enrollment["id"])
        assert {s["status"] for s in steps.values()} == {"skipped"}


def test_precall_1h_away_skips_for_min_lead(flow: Flow) -> None:
    flow.booking("BOOKING_CREATED", "bk_1", flow.clock.now() + timedelta(hours=1))
    flow.run(timedelta(hours=2))
    [enrollment] = flow.enrollments("pre-call")
    reasons = {s["reason"] for s in flow.steps(enrollment["id"]).values()}
    assert all(r.startswith("min_lead") for r in reasons), reasons


def test_duplicate_signups_enrol_once_and_send_each_email_once(flow: Flow) -> None:
    flow.signup(red_systems=2)
    flow.run(timedelta(hours=30))  # e-mails 1 and 2 sent
    flow.signup(red_systems=0)  # a re-signup mid-sequence: a no-op that says so
    flow.signup(red_systems=0)
    flow.run(timedelta(days=12))
    assert len(flow.enrollments("christmas-2025")) == 1
    templates = flow.templates()
    assert len(templates) == 7 and len(set(templates)) == 7
    contact_id = flow.enrollments()[0]["contact_id"]
    timeline = flow.h.client.get(f"/api/v1/contacts/{contact_id}/timeline", headers=AUTH).json()
    refused = [i for i in timeline["items"] if i["kind"] == "sequence.not_enrolled"]
    assert len(refused) == 2 and refused[0]["detail"]["reason"] == "already enrolled"


def test_concurrent_enrolments_of_one_key_make_one_enrollment(flow: Flow) -> None:
    with flow.db.begin() as conn:
        contact = contact_store.create(conn, EMAIL, flow.clock.now())
    service = SequenceService(load_sequences(DEFAULTS_DIR))
    seq = service.sequence("christmas-2025")
    results: list[str] = []
    barrier = threading.Barrier(6)

    def enrol() -> None:
        barrier.wait()
        with flow.db.begin() as conn:
            sink = DirectSink(conn, contact, flow.clock.now(), 64)
            out = service.enroll(
                conn, seq, contact, f"contact:{contact.id}", now=flow.clock.now(), sink=sink
            )
            results.append(out.status)

    threads = [threading.Thread(target=enrol) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == ["duplicate"] * 5 + ["enrolled"]
    assert len(flow.enrollments()) == 1
    flow.run(timedelta(days=12))
    # No assessment segment on this contact: the segment-specific e-mails 2 and 7 cannot name a
    # template, so they fail visibly (dead, retryable) instead of going out as something else.
    assert flow.templates() == [t for t in CHRISTMAS if "{}" not in t]
    with flow.db.read() as conn:
        dead = job_store.search(conn, status="dead", kind="sequence_step", contact_id=contact.id)
    assert sorted(j["key"].rsplit(":", 1)[1] for j in dead) == ["email-2", "email-7"]
    assert all("assessment" in j["last_error"] for j in dead)


def _jobs_by_status(flow: Flow) -> dict[str, int]:
    with flow.db.read() as conn:
        found = job_store.search(conn, status=None, kind="sequence_step", contact_id=None)
    out: dict[str, int] = {}
    for job in found:
        out[job["status"]] = out.get(job["status"], 0) + 1
    return out


@pytest.mark.parametrize("same_batch", [False, True], ids=["later", "same-batch"])
def test_booking_then_cancel_sends_no_reminder(flow: Flow, same_batch: bool) -> None:
    """Also when both arrive before the worker looks (one processing batch, whose step rows
    and jobs are written at its end: the cancel must still find them)."""
    meeting = flow.clock.now() + timedelta(days=5)
    flow.booking("BOOKING_CREATED", "bk_1", meeting)
    if not same_batch:
        flow.run(timedelta(hours=1))
    flow.booking("BOOKING_CANCELLED", "bk_1", meeting)
    flow.run(meeting + timedelta(hours=1))
    assert flow.templates() == []
    [enrollment] = flow.enrollments("pre-call")
    assert enrollment["status"] == "cancelled"
    assert {s["status"] for s in flow.steps(enrollment["id"]).values()} == {"cancelled"}
    assert _jobs_by_status(flow) == {"cancelled": 3}


def test_booking_rescheduled_twice_reminds_only_for_the_final_time(flow: Flow) -> None:
    now = flow.clock.now()
    first, second, final = (now + timedelta(days=d) for d in (4, 6, 9))
    flow.booking("BOOKING_CREATED", "bk_1", first)
    flow.run(timedelta(hours=1))
    flow.booking("BOOKING_RESCHEDULED", "bk_2", second, rescheduleUid="bk_1")
    flow.run(timedelta(hours=1))
    flow.booking("BOOKING_RESCHEDULED", "bk_3", final, rescheduleUid="bk_2")
    flow.run(final + timedelta(hours=1))
    sent = flow.sent()
    assert [m["template"] for m in sent] == ["precall_72h", "precall_24h", "precall_2h"]
    assert [final - m["sent_at"] for m in sent] == [timedelta(hours=h) for h in (72, 24, 2)]
    [enrollment] = flow.enrollments("pre-call")
    assert enrollment["key"] == "bk_3" and enrollment["reschedules"] == 2
    # A late delivery of the first booking does not enrol it again (tombstone).
    flow.booking("BOOKING_CREATED", "bk_1", first + timedelta(days=30))
    flow.run(timedelta(days=40))
    assert len(flow.enrollments("pre-call")) == 1 and len(flow.sent()) == 3


def test_reschedule_into_the_min_lead_cancels_what_is_left(flow: Flow) -> None:
    meeting = flow.clock.now() + timedelta(days=5)
    flow.booking("BOOKING_CREATED", "bk_1", meeting)
    flow.run(timedelta(days=2, hours=1))  # the 72 h guide went out
    soon = flow.clock.now() + timedelta(hours=1)
    flow.booking("BOOKING_RESCHEDULED", "bk_2", soon, rescheduleUid="bk_1")
    flow.run(soon + timedelta(hours=1))
    assert flow.templates() == ["precall_72h"]
    [enrollment] = flow.enrollments("pre-call")
    steps = flow.steps(enrollment["id"])
    assert steps["prep-guide"]["status"] == "sent"
    assert steps["reminder"]["reason"].startswith("min_lead")
    assert enrollment["status"] == "completed"


def test_cancellation_delivered_before_its_booking_leaves_nothing(flow: Flow) -> None:
    meeting = flow.clock.now() + timedelta(days=5)
    flow.booking("BOOKING_CANCELLED", "bk_1", meeting)
    flow.run(timedelta(minutes=5))
    flow.booking("BOOKING_CREATED", "bk_1", meeting)
    flow.run(meeting + timedelta(hours=1))
    assert flow.enrollments("pre-call") == []
    assert flow.templates() == []


def test_unsubscribe_mid_sequence_cancels_the_remaining_steps(flow: Flow) -> None:
    flow.signup(red_systems=2)
    flow.run(timedelta(hours=30))
    assert flow.templates() == ["christmas_email_1", "christmas_email_2_critical"]
    [enrollment] = flow.enrollments()
    token = make_token(signing_key(flow.h.container.settings), enrollment["contact_id"])
    r = flow.h.client.post(f"/u/{token}", content=b"List-Unsubscribe=One-Click")
    assert r.status_code == 200
    flow.run(timedelta(days=12))
    assert len(flow.templates()) == 2
    [enrollment] = flow.enrollments()
    assert enrollment["status"] == "exited"
    assert enrollment["end_reason"] == "event email.unsubscribed"
    steps = flow.steps(enrollment["id"])
    assert [s["status"] for s in steps.values()] == ["sent"] * 2 + ["cancelled"] * 5


def test_a_booking_exits_the_drip_and_starts_the_reminders(flow: Flow) -> None:
    flow.signup(red_systems=1)
    flow.run(timedelta(hours=1))
    flow.booking("BOOKING_CREATED", "bk_1", flow.clock.now() + timedelta(days=4))
    flow.run(timedelta(days=12))
    assert flow.templates() == [
        "christmas_email_1",
        "precall_72h",
        "precall_24h",
        "precall_2h",
    ]
    christmas, precall = flow.enrollments()
    assert christmas["status"] == "exited" and christmas["end_reason"] == "event booking.created"
    assert precall["status"] == "completed"


def test_api_lists_sequences_enrollments_with_a_funnel_and_enrols_and_exits(flow: Flow) -> None:
    c = flow.h.client
    listed = c.get("/api/v1/sequences", headers=AUTH).json()["items"]
    assert [s["id"] for s in listed] == ["christmas-2025", "pre-call"]
    assert [s["at"] for s in listed[1]["steps"]] == ["-3d", "-1d", "-2h"]

    flow.signup(red_systems=2)
    flow.run(timedelta(hours=30))
    with flow.db.begin() as conn:
        bob = contact_store.create(conn, "bob@example.com", flow.clock.now(), {"first_name": "Bob"})
    r = c.post(
        "/api/v1/sequences/christmas-2025/enroll", json={"email": "bob@example.com"}, headers=AUTH
    )
    assert r.status_code == 201, r.text
    bob_enrollment = r.json()["enrollment"]
    assert bob_enrollment["contact_id"] == bob.id and len(bob_enrollment["steps"]) == 7
    again = c.post(
        "/api/v1/sequences/christmas-2025/enroll", json={"contact_id": bob.id}, headers=AUTH
    )
    assert again.status_code == 200 and again.json()["status"] == "duplicate"
    flow.run(timedelta(minutes=1))  # Bob's first e-mail goes out

    out = c.post(
        f"/api/v1/enrollments/{bob_enrollment['id']}/exit",
        json={"reason": "sales call"},
        headers=AUTH,
    )
    assert out.status_code == 200, out.text
    assert out.json()["status"] == "exited" and out.json()["end_reason"] == "sales call"
    assert (
        c.post(f"/api/v1/enrollments/{bob_enrollment['id']}/exit", headers=AUTH).status_code == 409
    )
    flow.run(timedelta(hours=1))

    page = c.get("/api/v1/sequences/christmas-2025/enrollments", headers=AUTH).json()
    funnel = page["funnel"]
    assert funnel["enrolled"] == 2 and funnel["active"] == 1
    assert funnel["exited"] == {"sales call": 1}
    by_step = {s["step_id"]: s for s in funnel["steps"]}
    assert by_step["email-1"]["sent"] == 2 and by_step["email-2"]["sent"] == 1
    assert by_step["email-3"] == {
        "step_id": "email-3",
        "scheduled": 1,
        "sent": 0,
        "skipped": 0,
        "cancelled": 1,
    }
    ann = next(i for i in page["items"] if i["contact_id"] != bob.id)
    assert [s["status"] for s in ann["steps"]][:3] == ["sent", "sent", "scheduled"]

    assert (
        c.post(
            "/api/v1/sequences/nope/enroll", json={"contact_id": bob.id}, headers=AUTH
        ).status_code
        == 404
    )
    missing_key = c.post(
        "/api/v1/sequences/pre-call/enroll", json={"contact_id": bob.id}, headers=AUTH
    )
    assert missing_key.status_code == 422
    assert c.get("/api/v1/sequences").status_code == 401


# -- several events of one contact in one processing batch ------------------------------------
# The processor writes step rows and step jobs once per batch (nurture.intake.deferred); an
# exit, a cancellation or a reschedule later in the same batch must still find and change them.


def test_booking_and_its_reschedule_in_one_batch_remind_for_the_new_time(flow: Flow) -> None:
    now = flow.clock.now()
    first, final = now + timedelta(days=4), now + timedelta(days=8)
    flow.booking("BOOKING_CREATED", "bk_1", first)
    flow.booking("BOOKING_RESCHEDULED", "bk_2", final, rescheduleUid="bk_1")
    flow.run(final + timedelta(hours=1))
    sent = flow.sent()
    assert [m["template"] for m in sent] == ["precall_72h", "precall_24h", "precall_2h"]
    assert [final - m["sent_at"] for m in sent] == [timedelta(hours=h) for h in (72, 24, 2)]
    [enrollment] = flow.enrollments("pre-call")
    assert enrollment["key"] == "bk_2"


def test_signup_and_booking_in_one_batch_exit_the_drip_before_any_email(flow: Flow) -> None:
    flow.signup(red_systems=1)
    flow.booking("BOOKING_CREATED", "bk_1", flow.clock.now() + timedelta(days=4))
    flow.run(timedelta(days=12))
    assert flow.templates() == ["precall_72h", "precall_24h", "precall_2h"]
    christmas, _ = flow.enrollments()
    assert christmas["status"] == "exited"
    steps = flow.steps(christmas["id"])
    assert [s["status"] for s in steps.values()] == ["cancelled"] * 7
    assert _jobs_by_status(flow) == {"cancelled": 7, "done": 3}


def test_a_failing_event_in_the_batch_keeps_the_others_steps_once(flow: Flow) -> None:
    """The batch is redone with a savepoint per event: the enrolments around the failing event
    get their steps and jobs exactly once, and the failed event's own rows are rolled back."""

    class Explodes:
        name = "explodes"

        def apply(self, ctx: Any) -> None:
            if ctx.event.type == "form.submitted" and ctx.contact.email == "bad@example.com":
                raise RuntimeError("boom")

    flow.h.processor.steps.append(Explodes())
    for email in ("a@example.com", "bad@example.com", "b@example.com"):
        flow.signup(email=email)
    flow.h.processor.run_once()
    with flow.db.read() as conn:
        by_contact = {
            contact_store.load(conn, e["contact_id"]).email: e  # type: ignore[union-attr]
            for e in flow.enrollments()
        }
    assert sorted(by_contact) == ["a@example.com", "b@example.com"]
    for enrollment in by_contact.values():
        steps = flow.steps(enrollment["id"])
        assert len(steps) == 7
        assert {s["status"] for s in steps.values()} == {"scheduled"}
    assert _jobs_by_status(flow) == {"scheduled": 14}
