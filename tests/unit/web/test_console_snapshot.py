from __future__ import annotations

import threading
from datetime import UTC, datetime

from nurture.web.console.snapshot import Snapshot

AT = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)


def test_the_first_view_does_not_wait_and_later_views_get_the_value() -> None:
    release = threading.Event()
    calls = []

    def compute() -> int:
        calls.append(1)
        release.wait(5)
        return 42

    snap = Snapshot(compute, max_age=60, now=lambda: AT)
    assert snap.get() == (None, None)
    assert snap.get() == (None, None)  # one computation at a time
    release.set()
    snap.wait(5)
    assert snap.get() == (42, AT)
    assert len(calls) == 1


def test_an_expired_value_is_served_while_it_is_refreshed() -> None:
    values = iter([1, 2])
    snap = Snapshot(lambda: next(values), max_age=60, now=lambda: AT)
    snap.wait(5)
    snap.expire()
    assert snap.get()[0] == 1  # at once, the old value
    for _ in range(500):
        if snap.get()[0] == 2:
            break
        threading.Event().wait(0.01)
    assert snap.get()[0] == 2
