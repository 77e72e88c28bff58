"""Waking a sleeping worker early: no timer per job, one wake-up per worker.

The worker sleeps until the earliest ``run_at`` it knows of (bounded). An enqueue that commits
an earlier ``run_at`` wakes it: in-process through the commit hook (SQLite, ``nurture up``), or
through ``LISTEN/NOTIFY`` from any process (PostgreSQL).
"""

from __future__ import annotations

import asyncio
import contextlib
from datetime import datetime


class Wakeup:
    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._event: asyncio.Event | None = None
        # When the worker plans to look again; a job due earlier than this wakes it.
        self.deadline: datetime | None = None

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._event = asyncio.Event()

    def notify(self, run_at: datetime | None = None) -> None:
        """Thread-safe. ``None`` means "look again whatever the time" (e.g. after a reconnect)."""
        if self._loop is None or self._event is None:
            return
        deadline = self.deadline
        if run_at is None or deadline is None or run_at < deadline:
            # RuntimeError: the loop closed while another thread was committing.
            with contextlib.suppress(RuntimeError):
                self._loop.call_soon_threadsafe(self._event.set)

    async def wait(self, timeout: float) -> bool:
        """Sleep up to ``timeout`` seconds; True when woken early."""
        assert self._event is not None, "bind() first"
        try:
            await asyncio.wait_for(self._event.wait(), max(0.0, timeout))
            woken = True
        except TimeoutError:
            woken = False
        self._event.clear()
        return woken
