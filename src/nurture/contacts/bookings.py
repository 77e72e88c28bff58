"""Booking status on the contact, as the Christmas prototype kept it in Notion (§B7, §B8).

Cal.com events set the contact's attributes:

- ``booking.created`` / ``booking.rescheduled``: ``booking_status = booked``, ``call_date`` (the
  meeting's date where the attendee lives, not UTC's), ``call_at`` (the start time at the
  attendee's offset), ``booking_uid`` and ``campaign_status = pre-call``;
- ``booking.cancelled`` -> ``cancelled``; ``booking.no_show`` -> ``no_show`` (``completed`` when
  the mark is lifted: the attendee did come); ``meeting.ended`` -> ``completed``.

Always, however close the meeting is: the prototype skipped the update for meetings less than
2 h away. A cancellation, no-show or end that names another booking than the contact's current
one (the old booking of a reschedule) changes nothing, and neither does an event older than the
last booking event applied (webhooks retried out of order). It is a step, not default rules,
because the call date needs a time-zone conversion CEL cannot do.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from nurture.core.contacts import ContactState
from nurture.intake.context import ProcessingContext

BOOKED = "booked"
STATUS_BY_TYPE = {
    "booking.created": BOOKED,
    "booking.rescheduled": BOOKED,
    "booking.cancelled": "cancelled",
    "meeting.ended": "completed",
    "booking.no_show": "no_show",
}
PRE_CALL = "pre-call"
# Attributes this step owns on the contact.
STATUS, CALL_DATE, CALL_AT, UID, CAMPAIGN, LAST_AT = (
    "booking_status",
    "call_date",
    "call_at",
    "booking_uid",
    "campaign_status",
    "booking_event_at",
)


def _zone(name: Any) -> ZoneInfo | None:
    if not isinstance(name, str) or not name:
        return None
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return None


def local_start(start_time: Any, *zones: Any) -> datetime | None:
    """The meeting start at the first valid time zone of ``zones``, else at its own offset."""
    if not isinstance(start_time, str):
        return None
    try:
        start = datetime.fromisoformat(start_time.replace("Z", "+00:00"))
    except ValueError:
        return None
    if start.tzinfo is None:
        return None
    for name in zones:
        zone = _zone(name)
        if zone is not None:
            return start.astimezone(zone)
    return start


class BookingStep:
    name = "bookings"

    def apply(self, ctx: ProcessingContext) -> None:
        status = STATUS_BY_TYPE.get(ctx.event.type)
        contact = ctx.contact
        if status is None or contact is None:
            return
        data = ctx.event.data
        attrs = contact.attributes
        occurred = ctx.event.occurred_at.isoformat()
        last = attrs.get(LAST_AT)
        if isinstance(last, str) and _later(last, ctx.event.occurred_at):
            ctx.note("booking.ignored", {"reason": "older than the last booking event applied"})
            return
        uid = data.get("booking_uid")
        current = attrs.get(UID)
        if ctx.event.type == "booking.no_show" and data.get("no_show") is False:
            status = "completed"
        changes: dict[str, Any] = {STATUS: status, LAST_AT: occurred}
        if status == BOOKED:
            attendee = data.get("attendee") or {}
            start = local_start(
                data.get("start_time"), attendee.get("time_zone"), contact.time_zone
            )
            changes.update({UID: uid, CAMPAIGN: PRE_CALL})
            if start is not None:
                changes.update({CALL_DATE: start.date().isoformat(), CALL_AT: start.isoformat()})
        elif current is not None and uid is not None and uid != current:
            ctx.note(
                "booking.ignored",
                {"reason": f"{ctx.event.type} for booking {uid}, not the current {current}"},
            )
            return
        self._set(ctx, contact, changes)

    @staticmethod
    def _set(ctx: ProcessingContext, contact: ContactState, changes: dict[str, Any]) -> None:
        before = contact.attributes.get(STATUS)
        moved = {k: v for k, v in changes.items() if contact.attributes.get(k) != v}
        if not moved:
            return
        contact.attributes.update(moved)
        contact.dirty = True
        detail = {k: v for k, v in moved.items() if k != LAST_AT}
        ctx.note("booking.status", {"from": before, **detail})


def _later(stored: str, occurred: datetime) -> bool:
    try:
        last = datetime.fromisoformat(stored)
    except ValueError:
        return False
    return last.tzinfo is not None and last > occurred
