"""Booking status on the contact from real Cal.com webhooks (the Christmas prototype's Notion
fields, kept in nurture): created -> rescheduled -> cancelled, the call date in the attendee's
time zone, and a meeting less than 2 h away still marked booked (the prototype skipped it)."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import orjson
import pytest

from nurture.clock import VirtualClock
from nurture.config import Settings
from nurture.contacts.bookings import local_start
from nurture.storage import contacts as contact_store
from nurture.storage import timeline as timeline_store
from nurture.testing import Harness, harness

SECRET = "calcom-booking-secret"
EMAIL = "ann@example.com"


@pytest.fixture
def h(make_settings: Callable[..., Settings], clock: VirtualClock) -> Iterator[Harness]:
    with harness(make_settings(calcom_webhook_secret=SECRET), clock) as hh:
        yield hh


def z(when: datetime) -> str:
    return when.strftime("%Y-%m-%dT%H:%M:%S.000Z")


def send(h: Harness, trigger: str, uid: str, start: datetime, **extra: Any) -> None:
    body = {
        "triggerEvent": trigger,
        "createdAt": z(h.clock.now()),
        "payload": {
            "title": "Diagnostic call",
            "startTime": z(start),
            "endTime": z(start + timedelta(minutes=45)),
            "organizer": {"name": "Sang", "email": "host@busos.example", "timeZone": "UTC"},
            "attendees": [{"name": "Ann Lee", "email": EMAIL, "timeZone": "America/Toronto"}],
            "uid": uid,
            **extra,
        },
    }
    raw = orjson.dumps(body)
    signature = hmac.new(SECRET.encode(), raw, hashlib.sha256).hexdigest()
    r = h.client.post(
        "/webhooks/calcom",
        content=raw,
        headers={"x-cal-signature-256": signature, "content-type": "application/json"},
    )
    assert r.status_code == 202, r.text
    h.process()


def attributes(h: Harness) -> dict[str, Any]:
    with h.container.db.read() as conn:
        contact = contact_store.load_by_email(conn, EMAIL)
    assert contact is not None
    return contact.attributes


def test_created_rescheduled_cancelled(h: Harness, clock: VirtualClock) -> None:
    # 02:30 UTC on 2 December is still 1 December in Toronto.
    first = datetime.fromisoformat("2026-12-02T02:30:00+00:00")
    send(h, "BOOKING_CREATED", "bk_1", first)
    attrs = attributes(h)
    assert attrs["booking_status"] == "booked"
    assert attrs["call_date"] == "2026-12-01"
    assert attrs["call_at"] == "2026-12-01T21:30:00-05:00"
    assert attrs["campaign_status"] == "pre-call"
    assert attrs["booking_uid"] == "bk_1"

    clock.advance(timedelta(hours=1))
    moved = datetime.fromisoformat("2026-12-03T15:00:00+00:00")
    send(
        h,
        "BOOKING_RESCHEDULED",
        "bk_2",
        moved,
        rescheduleUid="bk_1",
        rescheduleStartTime=z(first),
    )
    attrs = attributes(h)
    assert (attrs["booking_status"], attrs["call_date"], attrs["booking_uid"]) == (
        "booked",
        "2026-12-03",
        "bk_2",
    )

    # A late cancellation of the old booking changes nothing ...
    clock.advance(timedelta(minutes=5))
    send(h, "BOOKING_CANCELLED", "bk_1", first)
    assert attributes(h)["booking_status"] == "booked"

    # ... the current one's does.
    clock.advance(timedelta(minutes=5))
    send(h, "BOOKING_CANCELLED", "bk_2", moved, cancellationReason="travel")
    attrs = attributes(h)
    assert attrs["booking_status"] == "cancelled"
    assert attrs["call_date"] == "2026-12-03"  # the last known date stays for reference

    with h.container.db.read() as conn:
        cid = contact_store.id_by_email(conn, EMAIL)
        assert cid is not None
        notes = timeline_store.for_contact(conn, cid)
    statuses = [n["detail"].get("booking_status") for n in reversed(notes)]
    assert [s for s in statuses if s] == ["booked", "cancelled"]
    assert any(n["kind"] == "booking.ignored" for n in notes)


def test_a_meeting_less_than_two_hours_away_is_still_booked(
    h: Harness, clock: VirtualClock
) -> None:
    send(h, "BOOKING_CREATED", "bk_soon", clock.now() + timedelta(hours=1))
    attrs = attributes(h)
    assert attrs["booking_status"] == "booked"
    assert attrs["campaign_status"] == "pre-call"
    local = (clock.now() + timedelta(hours=1)).astimezone(ZoneInfo("America/Toronto"))
    assert attrs["call_date"] == local.date().isoformat()


def test_meeting_ended_and_no_show(h: Harness, clock: VirtualClock) -> None:
    start = clock.now() + timedelta(days=2)
    send(h, "BOOKING_CREATED", "bk_9", start)
    clock.advance(timedelta(days=2, hours=1))
    send(h, "MEETING_ENDED", "bk_9", start)
    assert attributes(h)["booking_status"] == "completed"
    clock.advance(timedelta(hours=1))
    body = {
        "triggerEvent": "BOOKING_NO_SHOW_UPDATED",
        "createdAt": z(clock.now()),
        "payload": {"bookingUid": "bk_9", "attendees": [{"email": EMAIL, "noShow": True}]},
    }
    raw = orjson.dumps(body)
    signature = hmac.new(SECRET.encode(), raw, hashlib.sha256).hexdigest()
    r = h.client.post(
        "/webhooks/calcom",
        content=raw,
        headers={"x-cal-signature-256": signature, "content-type": "application/json"},
    )
    assert r.status_code == 202, r.text
    h.process()
    assert attributes(h)["booking_status"] == "no_show"


def test_local_start_falls_back_to_the_offset_given() -> None:
    assert local_start("2026-12-01T23:30:00-05:00", "Not/AZone", None) == datetime.fromisoformat(
        "2026-12-01T23:30:00-05:00"
    )
    toronto = local_start("2026-12-02T04:30:00Z", "America/Toronto")
    assert toronto is not None and toronto.date().isoformat() == "2026-12-01"
    assert local_start("2026-12-02T04:30:00", "UTC") is None
    assert local_start("tomorrow", "UTC") is None


def test_rescheduled_to_less_than_two_hours_away_is_still_booked_then_cancelled(
    h: Harness, clock: VirtualClock
) -> None:
    """created (3 days out) -> rescheduled to 1 h from now -> cancelled: the move inside the
    reminders' 2 h minimum lead still updates the status and the call date (the prototype
    skipped close meetings), and the cancellation of the new booking is applied."""
    first = clock.now() + timedelta(days=3)
    send(h, "BOOKING_CREATED", "bk_a", first)
    assert attributes(h)["booking_status"] == "booked"

    clock.advance(timedelta(minutes=10))
    soon = clock.now() + timedelta(hours=1)
    send(h, "BOOKING_RESCHEDULED", "bk_b", soon, rescheduleUid="bk_a")
    attrs = attributes(h)
    local = soon.astimezone(ZoneInfo("America/Toronto"))
    assert (attrs["booking_status"], attrs["booking_uid"]) == ("booked", "bk_b")
    assert attrs["call_date"] == local.date().isoformat()
    assert attrs["call_at"] == local.isoformat()
    assert attrs["campaign_status"] == "pre-call"

    clock.advance(timedelta(minutes=10))
    send(h, "BOOKING_CANCELLED", "bk_b", soon, cancellationReason="sick")
    assert attributes(h)["booking_status"] == "cancelled"
