"""Durable intake with group commit.

Every accepted event is answered only after its row is committed with ``synchronous=FULL`` (SQLite)
or a durable PostgreSQL commit. One commit costs one disk flush, so the requests that arrive while
a commit is flushing are gathered into the next transaction: each request still waits for its own
rows to be durable, but concurrent requests share the flush. No timer delays a lone request: when
no commit is running, a group starts on the next turn of the event loop.

The gathering happens on the event loop, not in the writer thread. A handler appends its rows and
an asyncio future to its loop's waiting list; the loop hands the whole waiting list to a writer
thread in one executor call and resolves the futures itself when that call returns. A request
therefore costs no thread wake-up and no cross-thread future of its own: one group costs one of
each, however many requests share it (the writer-thread queue this replaced woke the loop once per
request, which cost more than the request's own SQL).

A commit that fails fails its whole group: nothing of it is stored, and every request in it gets
the error (``StorageUnavailable`` -> 503, the senders retry). If the database refused the rows
rather than the transaction (a value it cannot store), the group's submissions are retried one
per transaction, so only the offending request fails.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial
from typing import Any

from nurture.clock import Clock
from nurture.core.events import InboundEvent, partition_for
from nurture.database.engine import Database
from nurture.errors import StorageUnavailable
from nurture.intake.tally import IntakeTally
from nurture.storage import events as event_store

log = logging.getLogger("nurture.ingest")

MAX_ROWS_PER_COMMIT = 5_000

Rows = list[dict[str, Any]]


@dataclass
class IngestOutcome:
    accepted: list[int] = field(default_factory=list)
    duplicates: list[int] = field(default_factory=list)

    def body(self) -> dict[str, Any]:
        if not self.accepted and self.duplicates:
            return {"status": "duplicate", "event_ids": self.duplicates}
        out: dict[str, Any] = {"status": "accepted", "event_ids": self.accepted}
        if self.duplicates:
            out["duplicate_ids"] = self.duplicates
        return out

    @property
    def status_code(self) -> int:
        return 200 if not self.accepted and self.duplicates else 202


# What a writer returns for each submission of a group: its outcome, or the error it gets.
Result = IngestOutcome | BaseException


def build_rows(
    events: Sequence[InboundEvent],
    raw_body: bytes | None,
    content_type: str | None,
    received_at: datetime,
    partitions: int,
    client_addr: str | None = None,
) -> Rows:
    single = len(events) == 1
    rows = []
    for ev in events:
        key = ev.contact.key if ev.contact else None
        raw = ev.raw if ev.raw is not None else (raw_body if single else None)
        rows.append(
            {
                "source": ev.source,
                "type": ev.type,
                "dedupe_key": f"{ev.source}:{ev.dedupe_key}",
                "partition": partition_for(key, partitions),
                "status": "pending",
                "available_at": received_at,
                "contact_key": key,
                "raw": raw,
                "content_type": content_type,
                "canonical": ev.canonical(),
                "received_at": received_at,
                "occurred_at": ev.occurred_at or received_at,
                "depth": 0,
                "client_addr": client_addr,
            }
        )
    return rows


class _Waiting:
    """The submissions of one event loop not yet handed to a writer, and its running commits."""

    __slots__ = ("futures", "loop", "rows", "running", "scheduled")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.rows: list[Rows] = []
        self.futures: list[asyncio.Future[IngestOutcome]] = []
        self.running = 0
        self.scheduled = False

    def take(self) -> tuple[list[Rows], list[asyncio.Future[IngestOutcome]]]:
        """The oldest submissions, up to ``MAX_ROWS_PER_COMMIT`` rows (at least one)."""
        count = 0
        n = 0
        for rows in self.rows:
            if n and count + len(rows) > MAX_ROWS_PER_COMMIT:
                break
            count += len(rows)
            n += 1
        if n == len(self.rows):
            group, futures = self.rows, self.futures
            self.rows, self.futures = [], []
        else:
            group, futures = self.rows[:n], self.futures[:n]
            del self.rows[:n], self.futures[:n]
        return group, futures


class Ingestor:
    """Stores inbound events; ``submit`` (async) and ``store`` (blocking) share the writers."""

    def __init__(
        self,
        db: Database,
        clock: Clock,
        *,
        partitions: int = 64,
        writers: int | None = None,
        on_commit: Callable[[], None] | None = None,
        tally: IntakeTally | None = None,
    ) -> None:
        self.db = db
        self.tally = tally
        self.clock = clock
        self.partitions = partitions
        self.on_commit = on_commit
        # SQLite has one writer anyway; PostgreSQL overlaps a few commits.
        self._writers = writers or (1 if db.is_sqlite else 4)
        self._executor: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()
        self._waiting: dict[asyncio.AbstractEventLoop, _Waiting] = {}
        self.commits = 0
        self.rows_committed = 0

    def _pool(self) -> ThreadPoolExecutor:
        pool = self._executor
        if pool is None:
            with self._lock:
                if self._executor is None:
                    self._executor = ThreadPoolExecutor(
                        self._writers, thread_name_prefix="ingest-writer"
                    )
                pool = self._executor
        return pool

    def close(self) -> None:
        """Wait for running commits and stop the writers (they start again on the next use)."""
        with self._lock:
            pool, self._executor = self._executor, None
        if pool is not None:
            pool.shutdown(wait=True)

    # -- async: group commit driven from the event loop -------------------------------------

    async def submit(
        self,
        events: Sequence[InboundEvent],
        raw: bytes | None,
        content_type: str | None,
        client_addr: str | None = None,
    ) -> IngestOutcome:
        loop = asyncio.get_running_loop()
        waiting = self._waiting.get(loop)
        if waiting is None:
            waiting = self._waiting_for(loop)
        future: asyncio.Future[IngestOutcome] = loop.create_future()
        waiting.rows.append(
            build_rows(events, raw, content_type, self.clock.now(), self.partitions, client_addr)
        )
        waiting.futures.append(future)
        if not waiting.scheduled and waiting.running < self._writers:
            # Not at once: requests whose bytes arrived in the same turn of the loop join.
            waiting.scheduled = True
            loop.call_soon(self._start, waiting)
        return await future

    def _waiting_for(self, loop: asyncio.AbstractEventLoop) -> _Waiting:
        with self._lock:
            for old in [lp for lp in self._waiting if lp.is_closed()]:
                del self._waiting[old]
            return self._waiting.setdefault(loop, _Waiting(loop))

    def _start(self, waiting: _Waiting) -> None:
        """On the loop: hand what is waiting to a writer, if one is free."""
        waiting.scheduled = False
        while waiting.rows and waiting.running < self._writers:
            group, futures = waiting.take()
            waiting.running += 1
            try:
                done = self._pool().submit(self._commit, group)
            except RuntimeError as exc:  # the pool is shutting down
                waiting.running -= 1
                self._resolve(futures, [StorageUnavailable(f"intake is stopping: {exc}")])
                continue
            done.add_done_callback(partial(self._hand_back, waiting, futures))

    def _hand_back(
        self,
        waiting: _Waiting,
        futures: list[asyncio.Future[IngestOutcome]],
        done: Future[list[Result]],
    ) -> None:
        """In the writer thread: one wake-up of the loop for the whole group."""
        # A closed loop raises RuntimeError: nobody is waiting for these answers any more.
        with contextlib.suppress(RuntimeError):
            waiting.loop.call_soon_threadsafe(self._finished, waiting, futures, done)

    def _finished(
        self,
        waiting: _Waiting,
        futures: list[asyncio.Future[IngestOutcome]],
        done: Future[list[Result]],
    ) -> None:
        waiting.running -= 1
        error = done.exception()
        results: Sequence[Result] = [error] if error is not None else done.result()
        self._resolve(futures, results)
        if waiting.rows and not waiting.scheduled:
            self._start(waiting)

    @staticmethod
    def _resolve(futures: list[asyncio.Future[IngestOutcome]], results: Sequence[Result]) -> None:
        """One result per future, or a single error for all of them."""
        for i, future in enumerate(futures):
            if future.done():  # the request was cancelled; its rows may still be stored
                continue
            result = results[i] if len(results) == len(futures) else results[0]
            if isinstance(result, BaseException):
                future.set_exception(result)
            else:
                future.set_result(result)

    # -- blocking ---------------------------------------------------------------------------

    def store(
        self,
        events: Sequence[InboundEvent],
        raw: bytes | None = None,
        content_type: str | None = None,
    ) -> IngestOutcome:
        """Store from a thread without an event loop (tests, scripts): one commit per call."""
        rows = build_rows(events, raw, content_type, self.clock.now(), self.partitions)
        result = self._pool().submit(self._commit, [rows]).result()[0]
        if isinstance(result, BaseException):
            raise result
        return result

    # -- writer thread ----------------------------------------------------------------------

    def _commit(self, group: list[Rows]) -> list[Result]:
        """Commit a group in one transaction; raises if that transaction failed."""
        try:
            return list(self._commit_together(group))
        except StorageUnavailable:
            raise
        except Exception:
            if len(group) == 1:
                raise
        # The database refused something in the rows (not the transaction): one request's bad
        # value must not fail the requests that only shared its commit.
        log.warning(
            "group commit refused; committing its requests one by one",
            extra={"action": "ingest.group_split", "requests": len(group)},
        )
        results: list[Result] = []
        for rows in group:
            try:
                results.extend(self._commit_together([rows]))
            except Exception as exc:
                results.append(exc)
        return results

    def _commit_together(self, group: list[Rows]) -> list[IngestOutcome]:
        # First occurrence of a key within the group wins; later ones are duplicates.
        fresh: dict[str, dict[str, Any]] = {}
        for rows in group:
            for row in rows:
                fresh.setdefault(row["dedupe_key"], row)
        # PostgreSQL: the insert is one statement, committed on its own (one round trip, not
        # BEGIN + INSERT + COMMIT); the duplicates' ids are read after it, from committed rows.
        with self.db.autocommit() as conn:
            inserted = event_store.insert_new(conn, list(fresh.values()))
            missing = [k for k in fresh if k not in inserted]
            existing = event_store.ids_for_keys(conn, missing)
            if self.tally is not None:
                self.tally.write_in(conn)
        self.commits += 1
        self.rows_committed += len(inserted)
        claimed: set[str] = set()
        outcomes = []
        for rows in group:
            outcome = IngestOutcome()
            for row in rows:
                key = row["dedupe_key"]
                if key in inserted and key not in claimed and fresh[key] is row:
                    claimed.add(key)
                    outcome.accepted.append(inserted[key])
                else:
                    outcome.duplicates.append(inserted.get(key) or existing.get(key, 0))
            outcomes.append(outcome)
        if inserted and self.tally is not None:
            self.tally.stored(r for k, r in fresh.items() if k in inserted)
        if inserted and self.on_commit is not None:
            self.on_commit()
        return outcomes
