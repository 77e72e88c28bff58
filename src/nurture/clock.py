"""Clocks. Domain code receives ``now`` or a ``Clock``; it never reads the system clock itself."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from typing import Protocol


class Clock(Protocol):
    def now(self) -> datetime: ...


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)


class VirtualClock:
    """A clock tests and ``simulate`` move by hand; ``advance`` is instant."""

    def __init__(self, start: datetime) -> None:
        if start.tzinfo is None:
            raise ValueError("VirtualClock needs a timezone-aware start")
        self._now = start.astimezone(UTC)
        self._lock = threading.Lock()

    def now(self) -> datetime:
        with self._lock:
            return self._now

    def advance(self, delta: timedelta) -> datetime:
        with self._lock:
            self._now += delta
            return self._now

    def set(self, when: datetime) -> None:
        with self._lock:
            self._now = when.astimezone(UTC)


FixedClock = VirtualClock


def ensure_utc(value: datetime) -> datetime:
    """Refuse naive datetimes: the prototypes' naive local times shifted sends by the
    server's offset."""
    if value.tzinfo is None:
        raise ValueError("naive datetime: nurture only handles timezone-aware times")
    return value.astimezone(UTC)


def scale_delay(delay: timedelta, time_scale: float) -> timedelta:
    """``NURTURE_TIME_SCALE`` shrinks every delay (1440: a day becomes a minute), nothing else."""
    if time_scale == 1:
        return delay
    return delay / time_scale
