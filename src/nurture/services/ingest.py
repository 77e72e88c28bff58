"""Durable intake with group commit.

Every accepted event is answered only after its row is committed with ``synchronous=FULL`` (SQLite)
or a durable PostgreSQL commit. One commit costs one disk flush, so a writer thread gathers every
request that arrives while the previous commit is flushing into the next transaction: each
request still waits for its own rows to be durable, but concurrent requests share the flush.
No timer delays a lone request; batching only happens when there is a queue.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from nurture.clock import Clock
from nurture.core.events import InboundEvent, partition_for
from nurture.storage import events as event_store
from nurture.storage.engine import Database

log = logging.getLogger("nurture.ingest")

MAX_ROWS_PER_COMMIT = 5_000


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


@dataclass
class _Submission:
    rows: list[dict[str, Any]]
    future: Future[IngestOutcome]


def build_rows(
    events: Sequence[InboundEvent],
    raw_body: bytes | None,
    content_type: str | None,
    received_at: datetime,
    partitions: int,
) -> list[dict[str, Any]]:
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
            }
        )
    return rows


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
    ) -> None:
        self.db = db
        self.clock = clock
        self.partitions = partitions
        self.on_commit = on_commit
        # SQLite has one writer anyway; PostgreSQL overlaps a few commits.
        self._writers = writers or (1 if db.is_sqlite else 4)
        self._queue: queue.SimpleQueue[_Submission | None] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self.commits = 0
        self.rows_committed = 0

    def _ensure_started(self) -> None:
        if self._threads:
            return
        with self._lock:
            if self._threads:
                return
            for i in range(self._writers):
                t = threading.Thread(target=self._run, name=f"ingest-writer-{i}", daemon=True)
                t.start()
                self._threads.append(t)

    def close(self) -> None:
        for _ in self._threads:
            self._queue.put(None)
        for t in self._threads:
            t.join(timeout=10)
        self._threads.clear()

    def _enqueue(
        self, events: Sequence[InboundEvent], raw: bytes | None, ctype: str | None
    ) -> Future[IngestOutcome]:
        self._ensure_started()
        rows = build_rows(events, raw, ctype, self.clock.now(), self.partitions)
        fut: Future[IngestOutcome] = Future()
        self._queue.put(_Submission(rows, fut))
        return fut

    async def submit(
        self, events: Sequence[InboundEvent], raw: bytes | None, content_type: str | None
    ) -> IngestOutcome:
        return await asyncio.wrap_future(self._enqueue(events, raw, content_type))

    def store(
        self,
        events: Sequence[InboundEvent],
        raw: bytes | None = None,
        content_type: str | None = None,
    ) -> IngestOutcome:
        return self._enqueue(events, raw, content_type).result()

    # -- writer thread ----------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            group = [first]
            count = len(first.rows)
            while count < MAX_ROWS_PER_COMMIT:
                try:
                    nxt = self._queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    self._queue.put(None)  # let the outer loop see the stop signal
                    break
                group.append(nxt)
                count += len(nxt.rows)
            self._commit(group)

    def _commit(self, group: list[_Submission]) -> None:
        # First occurrence of a key within the group wins; later ones are duplicates.
        fresh: dict[str, dict[str, Any]] = {}
        for sub in group:
            for row in sub.rows:
                fresh.setdefault(row["dedupe_key"], row)
        try:
            with self.db.begin() as conn:
                inserted = event_store.insert_new(conn, list(fresh.values()))
                missing = [k for k in fresh if k not in inserted]
                existing = event_store.ids_for_keys(conn, missing)
        except Exception as exc:
            for sub in group:
                sub.future.set_exception(exc)
            return
        self.commits += 1
        self.rows_committed += len(inserted)
        claimed: set[str] = set()
        for sub in group:
            outcome = IngestOutcome()
            for row in sub.rows:
                key = row["dedupe_key"]
                if key in inserted and key not in claimed and fresh[key] is row:
                    claimed.add(key)
                    outcome.accepted.append(inserted[key])
                else:
                    outcome.duplicates.append(inserted.get(key) or existing.get(key, 0))
            sub.future.set_result(outcome)
        if inserted and self.on_commit is not None:
            self.on_commit()
