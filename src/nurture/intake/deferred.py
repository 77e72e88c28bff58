"""Rows a processing batch writes once, at its end, instead of once per event.

A signup enrolled into a seven-step sequence wrote its derived events, its step rows and its
step jobs in three statements of its own; per statement the driver and SQLAlchemy cost more
than SQLite's insert of a few rows. Gathered here, a batch of 200 signups writes them in three
statements in all. Nothing is lost by waiting: the rows commit in the batch's transaction either
way, and a failed batch is redone with a savepoint per event, where the processor flushes after
each event so that a rolled-back event takes its rows with it.

Whoever is about to read or change step rows or step jobs within the batch (ending, cancelling
or re-planning an enrollment) calls ``flush`` first, so it sees every row planned before it.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Connection

from nurture.storage import enrollments as enrollment_store
from nurture.storage import events as event_store
from nurture.storage import jobs as job_store


class DeferredWrites:
    __slots__ = ("_earliest", "events", "jobs", "steps")

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self.steps: list[dict[str, Any]] = []
        self.jobs: list[dict[str, Any]] = []
        self._earliest: datetime | None = None

    def plan(self, steps: list[dict[str, Any]], jobs: list[dict[str, Any]]) -> None:
        """A new enrollment's step rows and its steps' jobs."""
        self.steps.extend(steps)
        if not jobs:
            return
        self.jobs.extend(jobs)
        first = min(job["run_at"] for job in jobs)
        if self._earliest is None or first < self._earliest:
            self._earliest = first

    def discard(self) -> None:
        """Forget what is pending: its event was rolled back to its savepoint."""
        self.events, self.steps, self.jobs, self._earliest = [], [], [], None

    def flush(self, conn: Connection, now: datetime) -> None:
        """Write what is pending, in arrival order within each table, and forget it."""
        if self.events:
            rows, self.events = self.events, []
            event_store.insert_new(conn, rows)
        if self.steps:
            rows, self.steps = self.steps, []
            enrollment_store.insert_steps(conn, rows)
        if self.jobs:
            rows, self.jobs = self.jobs, []
            earliest, self._earliest = self._earliest, None
            if job_store.insert_many(conn, rows) and earliest is not None:
                job_store.note_enqueued(conn, earliest, now)
