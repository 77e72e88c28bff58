"""What came in, counted in memory and written every few seconds (the console's overview
and Inbox).

The hot path only appends to a deque, without a lock (a few microseconds a request).
While events come in, the pending counts are written inside the ingest group commit every
``every`` seconds (``write_in``), so they cost no disk flush of their own; when intake is quiet,
the app's periodic ``flush`` writes them in their own transaction. A database that cannot take
them does not fail ingest (the counts are kept for the next write). A crash loses at most one
interval of counts; the events themselves are in the inbox table either way. Several processes
add to the same rows.

Metrics per (hour, source): ``event:<type>`` for every stored event (any path: webhooks, the
API, unsubscribe clicks), ``delivery:accepted`` / ``delivery:duplicate`` / ``rejected:<reason>``
for every webhook request. The Inbox keeps the newest ``recent`` requests of each interval
(rejected ones separately, so a flood of accepted events does not push them out).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection

from nurture.clock import Clock
from nurture.core import redact
from nurture.database.engine import Database
from nurture.storage import inbox, intake_counts

log = logging.getLogger("nurture.intake")

REASONS = {
    "StaleTimestamp": "stale_timestamp",
    "Unauthenticated": "bad_signature",
    "InvalidFields": "schema_error",
    "MalformedPayload": "malformed",
    "PayloadTooLarge": "too_large",
    "UnsupportedMediaType": "media_type",
    "Forbidden": "forbidden",
    "NotConfigured": "not_configured",
    "NotFound": "not_configured",
    "StorageUnavailable": "unavailable",
}


# Roll-ups older than this are deleted (the overview shows a week; "last accepted" looks back
# this far), so the table stays small whatever the uptime.
RETENTION = timedelta(days=35)


def reason_for(exc: BaseException) -> str:
    for cls in type(exc).__mro__:
        if cls.__name__ in REASONS:
            return REASONS[cls.__name__]
    return "error"


def hour(at: datetime) -> datetime:
    return at.replace(minute=0, second=0, microsecond=0)


@dataclass
class Delivery:
    at: datetime
    source: str
    route: str
    outcome: str  # accepted | duplicate | rejected
    status_code: int
    reason: str | None = None
    detail: str | None = None
    event_ids: list[int] = field(default_factory=list)
    body: bytes | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    client_addr: str | None = None

    def row(self) -> dict[str, Any]:
        # Redacted here, in the flushing thread, not on the request path.
        return {
            "at": self.at,
            "source": self.source[:100],
            "route": self.route[:200],
            "outcome": self.outcome,
            "reason": self.reason,
            "status_code": self.status_code,
            "detail": (self.detail or None) and self.detail[:2000],
            "event_ids": self.event_ids[:500],
            "payload": redact.payload(self.body) if self.outcome == "rejected" else None,
            "headers": redact.headers({k: v[:500] for k, v in list(self.headers.items())[:40]}),
            "client_addr": self.client_addr,
        }


class IntakeTally:
    def __init__(
        self,
        db: Database,
        clock: Clock,
        *,
        every: float = 2.0,
        recent: int = 100,
        inbox_keep: int = 5000,
    ) -> None:
        self.db = db
        self.clock = clock
        self.every = every
        self._written = time.monotonic()
        self.inbox_keep = inbox_keep
        # Filled by the event loop (deliveries) and the ingest writer threads (stored events)
        # with single appends, which need no lock: a lock shared by those threads made them
        # hand the GIL to each other on every request. Only the flushing thread drains them.
        self._deliveries: deque[Delivery] = deque()
        self._stored: deque[list[tuple[datetime, str, str]]] = deque()
        self._flushing = threading.Lock()
        self._counts: dict[tuple[datetime, str, str], list[Any]] = {}
        self._recent: deque[Delivery] = deque(maxlen=recent)
        self._rejected: deque[Delivery] = deque(maxlen=recent)
        self._pruned_at: datetime | None = None

    def _add(self, at: datetime, source: str, metric: str, n: int = 1) -> None:
        key = (hour(at), source, metric)
        found = self._counts.get(key)
        if found is None:
            self._counts[key] = [n, at]
        else:
            found[0] += n
            if at > found[1]:
                found[1] = at

    def stored(self, rows: Iterable[Mapping[str, Any]]) -> None:
        """Events just committed (the ingest writer thread calls this)."""
        self._stored.append([(r["received_at"], r["source"], r["type"]) for r in rows])

    def delivery(self, d: Delivery) -> None:
        """A webhook request answered (the event loop calls this)."""
        self._deliveries.append(d)

    def _drain(self) -> None:
        """Fold what the other threads appended into the counts (the flushing thread only)."""
        while True:
            try:
                batch = self._stored.popleft()
            except IndexError:
                break
            for at, source, type_ in batch:
                self._add(at, source, "event:" + type_)
        while True:
            try:
                d = self._deliveries.popleft()
            except IndexError:
                break
            if d.outcome == "rejected":
                self._add(d.at, d.source, "rejected:" + (d.reason or "error"))
                self._rejected.append(d)
            else:
                self._add(d.at, d.source, "delivery:" + d.outcome)
                self._recent.append(d)

    def _take(self) -> tuple[dict[tuple[datetime, str, str], list[Any]], list[Delivery]]:
        self._drain()
        counts, self._counts = self._counts, {}
        deliveries = sorted([*self._recent, *self._rejected], key=lambda d: d.at)
        self._recent.clear()
        self._rejected.clear()
        return counts, deliveries

    def _give_back(
        self, counts: dict[tuple[datetime, str, str], list[Any]], deliveries: list[Delivery]
    ) -> None:
        for (_, source, metric), (n, at) in counts.items():
            self._add(at, source, metric, n)
        for d in deliveries[-(self._recent.maxlen or 0) :]:
            (self._rejected if d.outcome == "rejected" else self._recent).appendleft(d)

    def due(self) -> bool:
        return time.monotonic() - self._written >= self.every

    def write_in(self, conn: Connection) -> int:
        """Inside the ingest group commit, when a flush is due: the counts ride on a commit
        that is flushed to disk anyway (a separate transaction would cost SQLite a second disk
        flush, and ingest would wait for it). In a savepoint, so a failure here fails only the
        counts; if the commit itself then fails, these counts are lost, like a crash's."""
        if not self.due() or not self._flushing.acquire(blocking=False):
            return 0
        try:
            counts, deliveries = self._take()
            if not counts and not deliveries:
                self._written = time.monotonic()
                return 0
            try:
                with conn.begin_nested():
                    written = self._write(conn, counts, deliveries)
            except Exception:
                self._failed(counts, deliveries)
                return 0
            self._written = time.monotonic()
            return written
        finally:
            self._flushing.release()

    def flush(self, *, force: bool = True) -> int:
        """Write what was counted since the last write, in a transaction of its own; the
        number of roll-up rows written. The periodic flush (``force=False``) leaves it to
        ``write_in`` while ingest commits often enough."""
        if not force and not self.due():
            return 0
        with self._flushing:
            counts, deliveries = self._take()
            if not counts and not deliveries:
                return 0
            try:
                with self.db.begin() as conn:
                    written = self._write(conn, counts, deliveries)
            except Exception:
                self._failed(counts, deliveries)
                return 0
            self._written = time.monotonic()
            return written

    def _write(
        self,
        conn: Connection,
        counts: dict[tuple[datetime, str, str], list[Any]],
        deliveries: list[Delivery],
    ) -> int:
        # Sorted: two processes adding to the same rows lock them in the same order.
        rows = [
            {
                "bucket": k[0],
                "source": k[1][:100],
                "metric": k[2][:160],
                "count": v[0],
                "last_at": v[1],
            }
            for k, v in sorted(counts.items(), key=lambda kv: kv[0])
        ]
        now = self.clock.now()
        intake_counts.add(conn, rows)
        inbox.add(conn, [d.row() for d in deliveries], self.inbox_keep)
        if self._pruned_at is None or now - self._pruned_at > timedelta(hours=1):
            intake_counts.prune(conn, now - RETENTION)
            self._pruned_at = now
        return len(rows)

    def _failed(
        self, counts: dict[tuple[datetime, str, str], list[Any]], deliveries: list[Delivery]
    ) -> None:
        log.warning(
            "could not write the intake counts; keeping them for the next flush",
            exc_info=True,
            extra={"action": "intake.tally_failed"},
        )
        self._give_back(counts, deliveries)
