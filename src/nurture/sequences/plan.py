"""Pure planning: when each step of an enrolment is due, or why it is skipped.

No I/O and no clock: everything takes ``now``. Times are timezone-aware UTC in and out; the
quiet-hours window is evaluated on the contact's wall clock with ``zoneinfo`` (DST included).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from nurture.clock import ensure_utc, scale_delay
from nurture.core.durations import format_duration, parse_duration

OFFSET = re.compile(r"^\s*([+-]?)\s*(.+?)\s*$")
DAY_NAMES = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


@dataclass(frozen=True, slots=True)
class Window:
    """Quiet hours: steps run between ``start`` and ``end`` (local) on ``days`` (0 = Monday)."""

    start: time
    end: time
    days: frozenset[int]

    def allows(self, local: datetime) -> bool:
        return local.weekday() in self.days and self.start <= local.time() < self.end


@dataclass(frozen=True, slots=True)
class StepTiming:
    """What planning needs to know about one step."""

    id: str
    offset: timedelta
    exact: bool = False


@dataclass(frozen=True, slots=True)
class PlannedStep:
    id: str
    position: int
    due_at: datetime
    # ``None``: scheduled at ``due_at``; otherwise why it will not run.
    skip: str | None = None

    @property
    def scheduled(self) -> bool:
        return self.skip is None


def parse_hours(value: str) -> tuple[time, time]:
    """``"08:00-20:00"`` -> (08:00, 20:00). Overnight windows are refused (write two sequences)."""
    parts = value.replace(" ", "").split("-")
    if len(parts) != 2:
        raise ValueError(f"{value!r} is not a range like 08:00-20:00")
    try:
        start, end = (time.fromisoformat(p) for p in parts)
    except ValueError:
        raise ValueError(f"{value!r} is not a range like 08:00-20:00") from None
    if start >= end:
        raise ValueError(f"{value!r}: the start must be before the end (no overnight windows)")
    return start, end


def parse_days(value: str | Sequence[str]) -> frozenset[int]:
    """``mon-fri``, ``sat,sun``, ``fri-mon`` (wraps), or a list of those."""
    items = [value] if isinstance(value, str) else list(value)
    days: set[int] = set()
    for item in items:
        for part in str(item).lower().replace(" ", "").split(","):
            if not part:
                continue
            ends = part.split("-")
            if len(ends) > 2 or any(e[:3] not in DAY_NAMES or len(e) < 3 for e in ends):
                raise ValueError(f"{part!r} is not a day or a range like mon-fri")
            first = DAY_NAMES.index(ends[0][:3])
            last = DAY_NAMES.index(ends[-1][:3])
            day = first
            days.add(day)
            while day != last:
                day = (day + 1) % 7
                days.add(day)
    if not days:
        raise ValueError("needs at least one day")
    return frozenset(days)


def parse_offset(value: str | int) -> timedelta:
    """A step's ``at:``: ``0h``, ``24h``, ``-72h``, ``1d12h``, ``-90m``; an integer is seconds."""
    if isinstance(value, bool):
        raise ValueError("must be a duration like 24h or -2h")
    if isinstance(value, int):
        return timedelta(seconds=value)
    match = OFFSET.match(str(value))
    if not match:
        raise ValueError(f"{value!r} is not a duration like 24h or -2h")
    sign, body = match.groups()
    delta = parse_duration(body)
    return -delta if sign == "-" else delta


def _local(day: date, at: time, zone: ZoneInfo) -> datetime:
    """The UTC instant of a wall-clock time; a time inside a spring-forward gap moves forward
    by the gap (02:30 on a day that skips 02:00-03:00 is 03:30), like a wall clock would."""
    naive = datetime.combine(day, at)
    return naive.replace(tzinfo=zone).astimezone(UTC)


def next_allowed(when: datetime, window: Window, zone: ZoneInfo) -> datetime:
    """The earliest instant at or after ``when`` inside the window (``when`` if it is inside)."""
    when = ensure_utc(when)
    local = when.astimezone(zone)
    if window.allows(local):
        return when
    for ahead in range(8):
        day = local.date() + timedelta(days=ahead)
        if day.weekday() not in window.days:
            continue
        start = _local(day, window.start, zone)
        end = _local(day, window.end, zone)
        if start >= when:
            return start
        if when < end:  # only reachable when ``when`` is inside but its wall time was ambiguous
            return when
    raise AssertionError("a window with at least one day always opens within a week")


def plan(
    steps: Sequence[StepTiming],
    *,
    anchor: datetime,
    now: datetime,
    anchored_on_event: bool,
    min_lead: timedelta | None = None,
    window: Window | None = None,
    zone: ZoneInfo | None = None,
    time_scale: float = 1.0,
) -> list[PlannedStep]:
    """Every step's due time, or why it is skipped.

    - Offsets (and ``min_lead``) shrink with ``time_scale`` relative to the anchor.
    - With an event anchor (a meeting), ``min_lead``: an anchor nearer than that skips every
      step. A step *before* the anchor must be strictly in the future: a reminder "24 h before"
      a meeting exactly 24 h away is not sent (the prototype's "strictly less" rule), whereas a
      step at or after the anchor that is due right now runs now.
    - The window postpones a step to the next allowed local time, except ``exact`` steps. It is
      applied after the past check: a postponed step is never skipped for it.
    """
    anchor = ensure_utc(anchor)
    now = ensure_utc(now)
    lead = scale_delay(min_lead, time_scale) if min_lead is not None else None
    too_soon = anchored_on_event and lead is not None and anchor - now < lead
    out = []
    for position, step in enumerate(steps):
        offset = scale_delay(step.offset, time_scale)
        due = anchor + offset
        skip: str | None = None
        if too_soon:
            skip = f"min_lead: the anchor is {_span(anchor - now)} away, less than {_span(lead)}"
        elif due < now or (due == now and step.offset < timedelta(0)):
            skip = (
                f"past: due {_span(now - due)} before enrolment" if due < now else "past: due now"
            )
        elif window is not None and not step.exact:
            due = next_allowed(due, window, zone or ZoneInfo("UTC"))
        out.append(PlannedStep(step.id, position, due, skip))
    return out


def _span(delta: timedelta | None) -> str:
    if delta is None:
        return "0s"
    if delta < timedelta(0):
        return "-" + format_duration(-delta)
    return format_duration(delta)
