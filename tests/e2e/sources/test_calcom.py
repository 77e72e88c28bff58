"""Cal.com over the ASGI app: the real flat payload, HMAC-SHA256 hex of the body, one event
per attendee, the organizer never a contact."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import orjson

from nurture.testing import Harness
from tests.e2e.sources.conftest import CALCOM_SECRET, assert_problem, only, process_all, stored


def booking(trigger: str, **extra: Any) -> dict[str, Any]:
    """Shaped like Cal.com's documented webhook body (payload version 2021-10-20)."""
    return {
        "triggerEvent": trigger,
        "createdAt": "2026-11-23T08:30:00.000Z",
        "payload": {
            "type": "strategy-call",
            "title": "Strategy call between Sam and Ann",
            "description": "",
            "startTime": "2026-12-01T15:00:00Z",
            "endTime": "2026-12-01T15:30:00Z",
            "organizer": {
                "id": 5,
                "name": "Sam Host",
                "email": "sam@host.example",
                "timeZone": "Europe/London",
                "language": {"locale": "en"},
            },
            "attendees": [
                {
                    "name": "Ann Lee",
                    "email": "Ann@Example.com",
                    "timeZone": "America/Toronto",
                    "language": {"locale": "en"},
                }
            ],
            "location": "integrations:daily",
            "uid": "bk_new_123",
            "bookingId": 991,
            "eventTypeId": 12,
            "status": "ACCEPTED",
            "responses": {"name": {"value": "Ann Lee"}, "email": {"value": "ann@example.com"}},
            "metadata": {"videoCallUrl": "https://app.cal.com/video/bk_new_123"},
            **extra,
        },
    }


def sign(body: bytes, secret: str = CALCOM_SECRET) -> str:
    # Cal.com's sendPayload: hex HMAC-SHA256 of the exact body it sends
    return hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def post(
    h: Harness, body: Any, *, path: str = "/webhooks/calcom", secret: str = CALCOM_SECRET
) -> Any:
    raw = body if isinstance(body, bytes) else orjson.dumps(body)
    headers = {"x-cal-signature-256": sign(raw, secret), "content-type": "application/json"}
    return h.client.post(path, content=raw, headers=headers)


def test_created_lands_for_the_attendee_with_time_zone(h: Harness) -> None:
    r = post(h, booking("BOOKING_CREATED"))
    assert r.status_code == 202, r.text
    row = only(h)
    assert row["type"] == "booking.created"
    assert row["occurred_at"] == datetime(2026, 11, 23, 8, 30, tzinfo=UTC)
    canonical = row["canonical"]
    assert canonical["contact"] == {
        "email": "ann@example.com",
        "traits": {"time_zone": "America/Toronto", "first_name": "Ann"},
    }
    data = canonical["data"]
    assert data["booking_uid"] == "bk_new_123"
    assert data["start_time"] == "2026-12-01T15:00:00+00:00"
    assert data["end_time"] == "2026-12-01T15:30:00+00:00"
    assert data["event_type"] == "strategy-call"
    assert data["attendee"] == {
        "name": "Ann Lee",
        "email": "ann@example.com",
        "time_zone": "America/Toronto",
    }
    assert data["organizer"] == {"name": "Sam Host", "email": "sam@host.example"}
    assert data["video_url"] == "https://app.cal.com/video/bk_new_123"
    assert data["location"] == "integrations:daily"

    process_all(h)
    with h.container.db.read() as conn:
        from nurture.storage import contacts

        contact = contacts.load_by_email(conn, "ann@example.com")
        organizer = contacts.load_by_email(conn, "sam@host.example")
    assert contact is not None and contact.time_zone == "America/Toronto"
    assert organizer is None


def test_rescheduled_carries_old_and_new(h: Harness) -> None:
    body = booking(
        "BOOKING_RESCHEDULED",
        uid="bk_new_456",
        rescheduleUid="bk_new_123",
        rescheduleStartTime="2026-12-01T15:00:00Z",
        rescheduleEndTime="2026-12-01T15:30:00Z",
        startTime="2026-12-02T10:00:00-05:00",
        endTime="2026-12-02T10:30:00-05:00",
    )
    assert post(h, body).status_code == 202
    data = only(h)["canonical"]["data"]
    assert only(h)["type"] == "booking.rescheduled"
    assert data["booking_uid"] == "bk_new_456"
    assert data["previous_booking_uid"] == "bk_new_123"
    assert data["start_time"] == "2026-12-02T10:00:00-05:00"
    assert data["previous_start_time"] == "2026-12-01T15:00:00+00:00"


def test_cancelled_meeting_ended_no_show_and_other_triggers(h: Harness) -> None:
    assert post(h, booking("BOOKING_CANCELLED", cancellationReason="conflict")).status_code == 202
    assert post(h, booking("MEETING_ENDED")).status_code == 202
    no_show = {
        "triggerEvent": "BOOKING_NO_SHOW_UPDATED",
        "createdAt": "2026-12-01T16:00:00.000Z",
        "payload": {
            "message": "x marked as no-show",
            "bookingUid": "bk_new_123",
            "bookingId": 991,
            "attendees": [{"email": "ann@example.com", "noShow": True}],
        },
    }
    assert post(h, no_show).status_code == 202
    assert post(h, booking("BOOKING_REQUESTED")).status_code == 202
    rows = stored(h)
    assert [r["type"] for r in rows] == [
        "booking.cancelled",
        "meeting.ended",
        "booking.no_show",
        "calcom.booking_requested",
    ]
    assert rows[0]["canonical"]["data"]["cancellation_reason"] == "conflict"
    assert rows[2]["canonical"]["data"]["no_show"] is True
    assert rows[2]["canonical"]["contact"] == {"email": "ann@example.com"}
    assert rows[3]["canonical"]["contact"] is None
    process_all(h)


def test_one_event_per_attendee(h: Harness) -> None:
    attendees = [
        {"name": "Ann Lee", "email": "ann@example.com", "timeZone": "America/Toronto"},
        {"name": "Bob", "email": "bob@example.com", "timeZone": "Not/AZone"},
    ]
    r = post(h, booking("BOOKING_CREATED", attendees=attendees))
    assert r.status_code == 202 and len(r.json()["event_ids"]) == 2
    ann, bob = stored(h)
    assert ann["canonical"]["contact"]["email"] == "ann@example.com"
    assert bob["canonical"]["contact"] == {
        "email": "bob@example.com",
        "traits": {"first_name": "Bob"},
    }
    assert bob["canonical"]["data"]["attendee"]["time_zone"] is None
    assert ann["raw"] == bob["raw"] and ann["raw"] is not None


def test_signature_failures(h: Harness) -> None:
    raw = orjson.dumps(booking("BOOKING_CREATED"))
    good = sign(raw)
    r = h.client.post(
        "/webhooks/calcom",
        content=raw.replace(b"15:00", b"16:00"),
        headers={"x-cal-signature-256": good, "content-type": "application/json"},
    )
    assert_problem(r, 401, "does not match")
    r = h.client.post("/webhooks/calcom", content=raw, headers={"content-type": "application/json"})
    assert_problem(r, 401, "missing")
    r = h.client.post(
        "/webhooks/calcom",
        content=raw,
        headers={"x-cal-signature-256": "no-secret-provided", "content-type": "application/json"},
    )
    assert_problem(r, 401, "no secret")
    assert_problem(post(h, booking("BOOKING_CREATED"), secret="another-secret"), 401)
    r = h.client.post(
        "/webhooks/calcom",
        content=raw,
        headers={"x-cal-signature-256": good, "content-type": "text/plain"},
    )
    assert_problem(r, 415)
    assert stored(h) == []


def test_rotation(make_harness: Callable[..., Harness]) -> None:
    h = make_harness(calcom_webhook_secret=f"old-secret-1 {CALCOM_SECRET}")
    assert post(h, booking("BOOKING_CREATED"), secret="old-secret-1").status_code == 202
    assert post(h, booking("MEETING_ENDED")).status_code == 202
    after = make_harness(calcom_webhook_secret=CALCOM_SECRET)
    assert_problem(post(after, booking("BOOKING_CANCELLED"), secret="old-secret-1"), 401)


def test_replay_is_duplicate(h: Harness) -> None:
    body = booking("BOOKING_CREATED")
    assert post(h, body).status_code == 202
    again = post(h, body)
    assert again.status_code == 200 and again.json()["status"] == "duplicate"
    assert len(stored(h)) == 1


def test_schema_errors_and_no_attendee(h: Harness) -> None:
    bad = booking("BOOKING_CREATED", startTime="2026-12-01 15:00", uid=None)
    body = assert_problem(post(h, bad), 422)
    assert {e["field"] for e in body["errors"]} == {"payload.uid", "payload.startTime"}
    assert_problem(post(h, {"createdAt": "x"}), 422, "triggerEvent")
    # an authentic booking with no usable attendee is stored, unattributed
    assert post(h, booking("BOOKING_CREATED", attendees=[{"name": "No Mail"}])).status_code == 202
    assert only(h)["canonical"]["contact"] is None


def test_prototype_route_reads_flat_and_nested(h: Harness) -> None:
    assert post(h, booking("BOOKING_CREATED"), path="/webhook/calcom-booking").status_code == 202
    flat = booking("BOOKING_CREATED", uid="bk_nested")["payload"]
    nested = {
        "triggerEvent": "BOOKING_CREATED",
        "createdAt": "2026-11-23T08:31:00Z",
        "payload": {"booking": flat},
    }
    assert post(h, nested, path="/webhook/calcom-booking").status_code == 202
    second = stored(h)[1]
    assert second["canonical"]["data"]["booking_uid"] == "bk_nested"
    assert second["canonical"]["contact"]["email"] == "ann@example.com"
    r = h.client.post(
        "/webhook/calcom-booking",
        content=orjson.dumps(nested),
        headers={"content-type": "application/json"},
    )
    assert_problem(r, 401)


def test_not_configured(make_harness: Callable[..., Harness]) -> None:
    h = make_harness(calcom_webhook_secret="")
    assert_problem(post(h, booking("BOOKING_CREATED")), 404, "NURTURE_CALCOM_WEBHOOK_SECRET")


def test_non_ascii_signature_header_is_a_401_not_a_crash(h: Harness) -> None:
    raw = orjson.dumps(booking("BOOKING_CREATED"))
    r = h.client.post(
        "/webhooks/calcom",
        content=raw,
        headers={"x-cal-signature-256": b"caf\xe9", "content-type": "application/json"},
    )
    assert_problem(r, 401, "does not match")
    assert stored(h) == []
