"""A value that is costly to compute (a count over a whole table), computed in the background
at most every ``max_age`` and served from memory in between.

No page view waits for it: the first one starts the computation and shows that it is under
way; later ones get the last value at once, with its time, while one background thread
refreshes a stale one.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import datetime
from typing import Generic, TypeVar

T = TypeVar("T")


class Snapshot(Generic[T]):
    def __init__(
        self, compute: Callable[[], T], max_age: float, now: Callable[[], datetime]
    ) -> None:
        self._compute = compute
        self._now = now
        self.max_age = max_age
        self._lock = threading.Lock()
        self._value: T | None = None
        self._at = 0.0  # time.monotonic() of the value
        self._wall: datetime | None = None  # when the value was computed, for "as of"
        self._refreshing = False

    def _refresh(self) -> None:
        try:
            value = self._compute()
            with self._lock:
                self._value, self._at, self._wall = value, time.monotonic(), self._now()
        finally:
            with self._lock:
                self._refreshing = False

    def get(self) -> tuple[T | None, datetime | None]:
        """The value and when it was computed; ``(None, None)`` until the first computation,
        which starts in the background on the first call."""
        with self._lock:
            value, at, wall = self._value, self._at, self._wall
            stale = value is None or time.monotonic() - at > self.max_age
            start = stale and not self._refreshing
            if start:
                self._refreshing = True
        if start:
            threading.Thread(target=self._refresh, name="console-snapshot", daemon=True).start()
        return value, wall

    def wait(self, timeout: float) -> None:
        """Block until a first value exists (tests, the benchmark's warm-up)."""
        deadline = time.monotonic() + timeout
        while self._value is None and time.monotonic() < deadline:
            self.get()
            time.sleep(0.01)

    def expire(self) -> None:
        """After a change: the next view starts a refresh (and still answers at once)."""
        with self._lock:
            self._at = 0.0
