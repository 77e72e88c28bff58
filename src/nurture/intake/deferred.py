"""Rows a processing batch writes once, at its end, instead of once per event.

A signup enrolled into a seven-step sequence wrote its derived events, its step rows and its
step jobs in three statements of its own; per statement the driver and SQLAlchemy cost more
than SQLite's insert of a few rows. Gathered here, a batch of 200 signups writes them in three
statements in all. Nothing is lost by waiting: the rows commit in the batch's transaction either
way, and a failed batch is redone with a savepoint per event, where the processor flushes after
each event so that a rolled-back event takes its rows with it.

On PostgreSQL the enrollments themselves wait too (``enrol``): one insert per signup was a round
trip to the server each, more than the rest of the signup's statements together. Their ids are
reserved up front (a few round trips a batch), so their steps and jobs are built as before; an
enrollment the batch insert refuses (a live one for its key, a tombstone) takes its steps and jobs
out of the batch, and its ``refused`` callback corrects what was noted about it.

Whoever is about to read or change enrollments, step rows or step jobs within the batch (ending,
cancelling or re-planning an enrollment) calls ``flush`` first, so it sees every row planned
before it.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from sqlalchemy import Connection

from nurture.storage import enrollments as enrollment_store
from nurture.storage import events as event_store
from nurture.storage import jobs as job_store

# Ids reserved per round trip: doubling from the first, so a batch with one signup wastes few and
# a batch of 200 signups reserves them in four round trips.
_FIRST_IDS, _MOST_IDS = 16, 256


class DeferredWrites:
    __slots__ = (
        "_block",
        "_earliest",
        "_ids",
        "_keys",
        "_refused",
        "enrollments",
        "events",
        "jobs",
        "steps",
    )

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self.enrollments: list[dict[str, Any]] = []
        self.steps: list[dict[str, Any]] = []
        self.jobs: list[dict[str, Any]] = []
        self._earliest: datetime | None = None
        self._keys: set[tuple[str, str]] = set()
        self._refused: dict[int, Callable[[Connection], None]] = {}
        self._ids: list[int] = []
        self._block = _FIRST_IDS

    def reserve(self, conn: Connection, sequence_id: str, key: str, now: datetime) -> int | None:
        """An id for an enrollment to ``enrol`` with the batch, or ``None``: insert it now.

        ``None`` on SQLite (no round trip to save), and when an enrollment for the same key is
        already waiting: that one is written first, so the insert now is refused as it should be.
        """
        if (sequence_id, key) in self._keys:
            self.flush(conn, now)
            return None
        if not self._ids:
            self._ids = enrollment_store.reserve_ids(conn, self._block)
            if not self._ids:
                return None
            self._ids.reverse()
            self._block = min(self._block * 2, _MOST_IDS)
        return self._ids.pop()

    def enrol(
        self,
        row: dict[str, Any],
        steps: list[dict[str, Any]],
        jobs: list[dict[str, Any]],
        refused: Callable[[Connection], None],
    ) -> None:
        """A new enrollment (``row["id"]`` from ``reserve``), its step rows and step jobs.
        ``refused(conn)`` runs at the flush if the insert is refused, after the batch's own
        enrollments are in, so it can read why."""
        self.enrollments.append(row)
        self._keys.add((row["sequence_id"], row["key"]))
        self._refused[row["id"]] = refused
        self.plan(steps, jobs)

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
        """Forget what is pending: its event was rolled back to its savepoint. (Reserved ids
        that were handed out are not reused: their rows may have been built into notes.)"""
        self.events, self.steps, self.jobs, self._earliest = [], [], [], None
        self.enrollments, self._keys, self._refused = [], set(), {}

    def flush(self, conn: Connection, now: datetime) -> None:
        """Write what is pending, in arrival order within each table, and forget it."""
        if self.events:
            rows, self.events = self.events, []
            event_store.insert_new(conn, rows)
        if self.enrollments:
            rows, self.enrollments, self._keys = self.enrollments, [], set()
            callbacks, self._refused = self._refused, {}
            refused = {row["id"] for row in rows} - enrollment_store.insert_live_many(conn, rows)
            if refused:
                self.steps = [r for r in self.steps if r["enrollment_id"] not in refused]
                self.jobs = [r for r in self.jobs if r.get("enrollment_id") not in refused]
                for row in rows:
                    if row["id"] in refused:
                        callbacks[row["id"]](conn)
        if self.steps:
            rows, self.steps = self.steps, []
            enrollment_store.insert_steps(conn, rows)
        if self.jobs:
            rows, self.jobs = self.jobs, []
            earliest, self._earliest = self._earliest, None
            if job_store.insert_many(conn, rows) and earliest is not None:
                job_store.note_enqueued(conn, earliest, now)
