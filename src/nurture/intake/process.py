"""The event processor: pending inbox rows in, contact changes and jobs out, one transaction.

Events are taken in batches (many per transaction, so the durable commit is paid once per batch)
and their contacts are loaded and created up front in a few queries. A failing event is rolled
back alone (the batch is redone with a savepoint per event) and retried later with backoff, then
parked as ``failed``; it never blocks the rest of its partition. On PostgreSQL a
batch only takes partitions it holds a transaction-level advisory lock on, so several workers
share the partitions, each partition is processed in arrival order by one worker at a time, and
a dead worker's locks vanish with its connection.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Connection

from nurture.clock import Clock
from nurture.core.contacts import ContactState
from nurture.core.events import StoredEvent, content_hash
from nurture.core.retry import RetryPolicy
from nurture.database.engine import Database
from nurture.errors import NurtureError
from nurture.intake.context import ProcessingContext, Step
from nurture.intake.deferred import DeferredWrites
from nurture.intake.resolve import BatchContacts
from nurture.storage import events as event_store
from nurture.storage import timeline as timeline_store

log = logging.getLogger("nurture.process")


class _EventFailed(Exception):
    """Internal: an event raised on the fast path; redo the batch with savepoints."""


def _restore(contact: ContactState, before: ContactState) -> None:
    for name in ContactState.__slots__:
        setattr(contact, name, getattr(before, name))


MAX_DERIVED_DEPTH = 5


@dataclass
class BatchResult:
    processed: int = 0
    failed: int = 0
    retried: int = 0
    event_ids: list[int] = field(default_factory=list)

    @property
    def total(self) -> int:
        return self.processed + self.failed + self.retried


class EventProcessor:
    def __init__(
        self,
        db: Database,
        clock: Clock,
        steps: Sequence[Step] = (),
        *,
        batch_size: int = 200,
        partitions: int = 64,
        retry: RetryPolicy | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.db = db
        self.clock = clock
        self.steps = list(steps)
        self.batch_size = batch_size
        self.partitions = partitions
        self.retry = retry or RetryPolicy(base_seconds=2.0, factor=4.0, max_attempts=5)
        self.rng = rng or random.Random()

    # -- public -----------------------------------------------------------------------------

    def run_once(self) -> BatchResult:
        """Process one batch of due events; returns what happened (0 when idle).

        The fast path runs the whole batch without savepoints. If any event raises, that
        transaction is rolled back and the same batch is redone with a savepoint per event, so
        only the failing event is set aside. Failures are rare; savepoints cost on every event.
        """
        now = self.clock.now()
        try:
            with self.db.begin() as conn:
                batch = self._claim(conn, now)
                if not batch:
                    return BatchResult()
                return self._process(conn, batch, now, isolate=False)
        except _EventFailed:
            pass
        with self.db.begin() as conn:
            batch = self._claim(conn, now)
            return self._process(conn, batch, now, isolate=True)

    def drain(self, max_batches: int = 1_000_000) -> int:
        """Process until nothing is due (tests, ``simulate``, ``?wait=true``)."""
        total = 0
        for _ in range(max_batches):
            result = self.run_once()
            if result.total == 0:
                break
            total += result.total
        return total

    # -- internals --------------------------------------------------------------------------

    def _claim(self, conn: Connection, now: datetime) -> list[StoredEvent]:
        if self.db.is_sqlite:
            # One writer at a time (BEGIN IMMEDIATE): the whole inbox is ours for this batch.
            return event_store.claim_pending(conn, now, self.batch_size)
        held = event_store.lock_pending_partitions(conn, now, self.partitions)
        if not held:
            return []
        return event_store.claim_pending(conn, now, self.batch_size, held)

    def _process(
        self, conn: Connection, batch: list[StoredEvent], now: datetime, *, isolate: bool
    ) -> BatchResult:
        result = BatchResult()
        contacts = BatchContacts()
        contacts.load(conn, batch, now)
        done: list[tuple[int, int | None]] = []
        notes: list[dict[str, Any]] = []
        handled: list[ProcessingContext] = []
        # Fast path: one set of deferred rows for the batch. Isolated: each event's rows are
        # written inside its own savepoint, so a rolled-back event leaves none behind.
        later = DeferredWrites()
        for event in batch:
            contact = contacts.attach(event)
            if not isolate:
                try:
                    ctx = self._handle(conn, event, contact, now, later)
                except Exception as exc:
                    raise _EventFailed(event.id) from exc
            else:
                before = contact.snapshot() if contact is not None else None
                savepoint = conn.begin_nested()
                try:
                    ctx = self._handle(conn, event, contact, now, later)
                    later.flush(conn, now)
                    savepoint.commit()
                except Exception as exc:  # a step's bug must not take the batch down with it
                    savepoint.rollback()
                    later.discard()
                    if contact is not None and before is not None:
                        _restore(contact, before)
                    self._fail(conn, event, exc, now, result)
                    continue
            done.append((event.id, contact.id if contact else None))
            notes.extend(ctx.timeline)
            handled.append(ctx)
            result.processed += 1
            result.event_ids.append(event.id)
        later.flush(conn, now)
        contacts.flush(conn, now)
        timeline_store.append(conn, notes)
        for step in self.steps:
            # A step may defer its rows (kept in ctx.results) to one write per batch; only the
            # contexts of events that succeeded are passed, as for the timeline above.
            finish = getattr(step, "finish_batch", None)
            if finish is not None:
                finish(conn, handled, now)
        event_store.mark_processed(conn, done, now)
        return result

    def _handle(
        self,
        conn: Connection,
        event: StoredEvent,
        contact: ContactState | None,
        now: datetime,
        later: DeferredWrites,
    ) -> ProcessingContext:
        ctx = ProcessingContext(conn=conn, event=event, contact=contact, now=now, later=later)
        if contact is not None:
            if contact.is_new:
                ctx.note("contact.created", {"source": event.source})
                contact.is_new = False
            if contact.last_event_at is None or event.occurred_at > contact.last_event_at:
                contact.last_event_at = event.occurred_at
            contact.dirty = True
            ctx.note("event", {"type": event.type, "source": event.source, "data": event.data})
        for step in self.steps:
            step.apply(ctx)
        self._queue_derived(ctx, later)
        return ctx

    def _queue_derived(self, ctx: ProcessingContext, later: DeferredWrites) -> None:
        if not ctx.derived:
            return
        event = ctx.event
        if event.depth + 1 > MAX_DERIVED_DEPTH:
            log.warning(
                "derived events dropped at depth limit",
                extra={"action": "event.derived_dropped", "event_id": event.id},
            )
            ctx.note("derived.dropped", {"types": [d.type for d in ctx.derived]})
            return
        contact_ref: dict[str, Any] | None = None
        if ctx.contact is not None:
            contact_ref = (
                {"email": ctx.contact.email}
                if ctx.contact.email
                else {"identities": dict(ctx.contact.identities)}
            )
        rows = later.events
        for index, derived in enumerate(ctx.derived):
            canonical = {
                "type": derived.type,
                "occurred_at": ctx.now.isoformat(),
                "contact": contact_ref,
                "data": derived.data,
            }
            rows.append(
                {
                    "source": "derived",
                    "type": derived.type,
                    "dedupe_key": "derived:" + content_hash(event.id, index, derived.type),
                    "partition": event.partition,
                    "status": "pending",
                    "available_at": ctx.now,
                    "contact_key": None,
                    "contact_id": ctx.contact.id if ctx.contact else None,
                    "raw": None,
                    "content_type": None,
                    "canonical": canonical,
                    "received_at": ctx.now,
                    "occurred_at": ctx.now,
                    "depth": event.depth + 1,
                    "parent_id": event.id,
                }
            )

    def _fail(
        self,
        conn: Connection,
        event: StoredEvent,
        exc: Exception,
        now: datetime,
        result: BatchResult,
    ) -> None:
        attempts = event.attempts + 1
        error = f"{type(exc).__name__}: {exc}"
        if not isinstance(exc, NurtureError):
            log.exception(
                "event processing failed",
                extra={"action": "event.error", "event_id": event.id, "type": event.type},
            )
        retry_at = self.retry.next_run(attempts, now, self.rng)
        if retry_at is None:
            event_store.mark_failed(conn, event.id, attempts, error, now)
            result.failed += 1
            log.warning(
                "event parked as failed",
                extra={"action": "event.failed", "event_id": event.id, "attempts": attempts},
            )
        else:
            event_store.mark_retry(conn, event.id, attempts, retry_at, error)
            result.retried += 1
