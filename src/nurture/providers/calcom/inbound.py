"""Cal.com booking webhooks -> ``booking.*`` / ``meeting.ended``, one event per attendee.

The body is ``{triggerEvent, createdAt, payload: {...}}`` with a *flat* payload
(``payload.startTime``, ``payload.attendees[]``, ``payload.uid``). ``X-Cal-Signature-256`` is
the hex HMAC-SHA256 of the body; there is no timestamp or delivery id, so the dedupe key is a
hash of the trigger, booking uid, ``createdAt`` and attendee. The organizer is never the contact.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from nurture.core.events import ContactRef, InboundEvent, content_hash
from nurture.errors import FieldProblem, InvalidFields, NotConfigured
from nurture.providers.payloads import email_of, from_iso, load_object, text_of, vendor_type
from nurture.providers.signing import CALCOM_HEADER, verify_hex_body

BOOKING_TRIGGERS = {
    "BOOKING_CREATED": "booking.created",
    "BOOKING_RESCHEDULED": "booking.rescheduled",
    "BOOKING_CANCELLED": "booking.cancelled",
    "MEETING_ENDED": "meeting.ended",
}
NO_SHOW_TRIGGER = "BOOKING_NO_SHOW_UPDATED"


def time_zone(value: Any) -> str | None:
    name = text_of(value)
    if name is None:
        return None
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return None
    return name


def iso_time(value: Any, field: str, problems: list[FieldProblem]) -> str | None:
    """Validated and rewritten as ISO 8601 with its offset; naive times are refused."""
    if value in (None, ""):
        return None
    parsed = from_iso(value)
    if parsed is None:
        problems.append(FieldProblem(field, "must be an ISO 8601 date-time with an offset"))
        return None
    return parsed.isoformat()


def person(value: Any) -> dict[str, Any] | None:
    if not isinstance(value, dict):
        return None
    return {
        "name": text_of(value.get("name")),
        "email": email_of(value.get("email")),
        "time_zone": time_zone(value.get("timeZone")),
    }


def location_of(booking: Mapping[str, Any]) -> str | None:
    loc = booking.get("location")
    if isinstance(loc, dict):
        return text_of(loc.get("value") or loc.get("type"))
    return text_of(loc)


def video_url_of(booking: Mapping[str, Any]) -> str | None:
    meta = booking.get("metadata")
    if isinstance(meta, dict) and text_of(meta.get("videoCallUrl")):
        return text_of(meta.get("videoCallUrl"))
    return text_of(booking.get("videoCallUrl"))


def first_name(name: str | None) -> str | None:
    return name.split()[0] if name and name.split() else None


class CalcomSource:
    name = "calcom"

    def __init__(
        self, secrets: Sequence[str], *, secret_env: str = "NURTURE_CALCOM_WEBHOOK_SECRET"
    ) -> None:
        self.secrets = list(secrets)
        self.secret_env = secret_env

    def verify(self, headers: Mapping[str, str], raw_body: bytes, now: datetime) -> None:
        if not self.secrets:
            raise NotConfigured(f"source 'calcom' is not configured: set {self.secret_env}")
        verify_hex_body(headers, raw_body, self.secrets, CALCOM_HEADER)

    def parse(self, raw_body: bytes, headers: Mapping[str, str]) -> list[InboundEvent]:
        return self.parse_body(load_object(raw_body), legacy=False)

    def parse_legacy(self, raw_body: bytes) -> list[InboundEvent]:
        """``/webhook/calcom-booking``: also the prototype's nested ``payload.booking`` shape."""
        return self.parse_body(load_object(raw_body), legacy=True)

    def parse_body(self, body: dict[str, Any], *, legacy: bool) -> list[InboundEvent]:
        trigger = body.get("triggerEvent")
        booking = body.get("payload")
        problems: list[FieldProblem] = []
        if not isinstance(trigger, str) or not trigger:
            problems.append(FieldProblem("triggerEvent", "is required"))
        if not isinstance(booking, dict):
            problems.append(FieldProblem("payload", "must be an object"))
        if problems:
            raise InvalidFields(problems)
        assert isinstance(trigger, str) and isinstance(booking, dict)
        if legacy and isinstance(booking.get("booking"), dict) and "attendees" not in booking:
            booking = {**booking, **booking["booking"]}
        created = body.get("createdAt")
        when = from_iso(created)
        if trigger == NO_SHOW_TRIGGER:
            return self._no_show(booking, created, when)
        event_type = BOOKING_TRIGGERS.get(trigger)
        if event_type is None:
            uid = booking.get("uid") or booking.get("bookingUid")
            return [
                InboundEvent(
                    source=self.name,
                    type=vendor_type("calcom", trigger),
                    dedupe_key=content_hash("calcom", trigger, uid, created),
                    contact=None,
                    data={"trigger": trigger, "booking_uid": text_of(uid)},
                    occurred_at=when,
                )
            ]
        return self._bookings(trigger, event_type, booking, created, when)

    def _bookings(
        self,
        trigger: str,
        event_type: str,
        booking: dict[str, Any],
        created: Any,
        when: datetime | None,
    ) -> list[InboundEvent]:
        problems: list[FieldProblem] = []
        uid = text_of(booking.get("uid"))
        if uid is None:
            problems.append(FieldProblem("payload.uid", "is required"))
        common: dict[str, Any] = {
            "booking_uid": uid,
            "start_time": iso_time(booking.get("startTime"), "payload.startTime", problems),
            "end_time": iso_time(booking.get("endTime"), "payload.endTime", problems),
            "title": text_of(booking.get("title")),
            "event_type": text_of(booking.get("type")),
            "organizer": _public(person(booking.get("organizer"))),
            "location": location_of(booking),
            "video_url": video_url_of(booking),
            "status": text_of(booking.get("status")),
        }
        if trigger == "BOOKING_RESCHEDULED":
            common["previous_booking_uid"] = text_of(booking.get("rescheduleUid"))
            common["previous_start_time"] = iso_time(
                booking.get("rescheduleStartTime"), "payload.rescheduleStartTime", problems
            )
            common["previous_end_time"] = iso_time(
                booking.get("rescheduleEndTime"), "payload.rescheduleEndTime", problems
            )
        if trigger == "BOOKING_CANCELLED":
            common["cancellation_reason"] = text_of(booking.get("cancellationReason"))
        if isinstance(booking.get("responses"), dict):
            common["responses"] = booking["responses"]
        attendees = booking.get("attendees")
        if not isinstance(attendees, list):
            problems.append(FieldProblem("payload.attendees", "must be a list"))
            attendees = []
        if problems:
            raise InvalidFields(problems)
        people = [p for p in (person(a) for a in attendees) if p is not None]
        usable = [p for p in people if p["email"]]
        if not usable:
            # Authentic but nobody to attribute it to: one stored event, no contact.
            return [
                InboundEvent(
                    source=self.name,
                    type=event_type,
                    dedupe_key=content_hash("calcom", trigger, uid, created, None),
                    contact=None,
                    data={**common, "attendee": None},
                    occurred_at=when,
                )
            ]
        out = []
        for attendee in usable:
            traits = {
                k: v
                for k, v in (
                    ("time_zone", attendee["time_zone"]),
                    ("first_name", first_name(attendee["name"])),
                )
                if v
            }
            out.append(
                InboundEvent(
                    source=self.name,
                    type=event_type,
                    dedupe_key=content_hash("calcom", trigger, uid, created, attendee["email"]),
                    contact=ContactRef(email=attendee["email"], traits=traits),
                    data={**common, "attendee": attendee},
                    occurred_at=when,
                )
            )
        return out

    def _no_show(
        self, booking: dict[str, Any], created: Any, when: datetime | None
    ) -> list[InboundEvent]:
        uid = text_of(booking.get("bookingUid") or booking.get("uid"))
        attendees = booking.get("attendees")
        if not isinstance(attendees, list):
            raise InvalidFields([FieldProblem("payload.attendees", "must be a list")])
        out = []
        for item in attendees:
            if not isinstance(item, dict):
                continue
            email = email_of(item.get("email"))
            no_show = bool(item.get("noShow"))
            out.append(
                InboundEvent(
                    source=self.name,
                    type="booking.no_show",
                    dedupe_key=content_hash(
                        "calcom", NO_SHOW_TRIGGER, uid, created, email, no_show
                    ),
                    contact=ContactRef(email=email) if email else None,
                    data={
                        "booking_uid": uid,
                        "no_show": no_show,
                        "attendee": {"name": None, "email": email, "time_zone": None},
                    },
                    occurred_at=when,
                )
            )
        if not out:
            raise InvalidFields([FieldProblem("payload.attendees", "lists nobody")])
        return out


def _public(p: dict[str, Any] | None) -> dict[str, Any] | None:
    return None if p is None else {"name": p["name"], "email": p["email"]}
