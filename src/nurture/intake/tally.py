"""What came in, counted in memory and written every few seconds (the console's overview
and Inbox).

The hot path only appends to a dict and a bounded deque under a lock: a webhook request never
waits for these writes, and a database that cannot take them does not fail ingest (the counts
are kept and added on the next flush). A crash loses at most one flush interval of counts; the
events themselves are in the inbox table either way. Several processes add to the same rows.

Metrics per (hour, source): ``event:<type>`` for every stored event (any path: webhooks, the
API, unsubscribe clicks), ``delivery:accepted`` / ``delivery:duplicate`` / ``rejected:<reason>``
for every webhook request. The Inbox keeps the newest ``recent`` requests of each interval
(rejected ones separately, so a flood of accepted events does not push them out).
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from nurture.clock import Clock
from nurture.core import redact
from nurture.storage import inbox, intake_counts
from nurture.storage.engine import Database

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
        self, db: Database, clock: Clock, *, recent: int = 200, inbox_keep: int = 5000
    ) -> None:
        self.db = db
        self.clock = clock
        self.inbox_keep = inbox_keep
        self._lock = threading.Lock()
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
        with self._lock:
            for row in rows:
                self._add(row["received_at"], row["source"], "event:" + row["type"])

    def delivery(self, d: Delivery) -> None:
        metric = (
            "rejected:" + (d.reason or "error")
            if d.outcome == "rejected"
            else ("delivery:" + d.outcome)
        )
        with self._lock:
            self._add(d.at, d.source, metric)
            (self._rejected if d.outcome == "rejected" else self._recent).append(d)

    def _take(self) -> tuple[dict[tuple[datetime, str, str], list[Any]], list[Delivery]]:
        with self._lock:
            counts, self._counts = self._counts, {}
            deliveries = sorted([*self._recent, *self._rejected], key=lambda d: d.at)
            self._recent.clear()
            self._rejected.clear()
        return counts, deliveries

    def _give_back(
        self, counts: dict[tuple[datetime, str, str], list[Any]], deliveries: list[Delivery]
    ) -> None:
        with self._lock:
            for (_, source, metric), (n, at) in counts.items():
                self._add(at, source, metric, n)
            for d in deliveries[-(self._recent.maxlen or 0) :]:
                (self._rejected if d.outcome == "rejected" else self._recent).appendleft(d)

    def flush(self) -> int:
        """Write what was counted since the last flush; the number of roll-up rows written."""
        with self._flushing:
            counts, deliveries = self._take()
            if not counts and not deliveries:
                return 0
            rows = [
                {
                    "bucket": k[0],
                    "source": k[1][:100],
                    "metric": k[2][:160],
                    "count": v[0],
                    "last_at": v[1],
                }
                for k, v in counts.items()
            ]
            try:
                inbox_rows = [d.row() for d in deliveries]
                now = self.clock.now()
                prune = self._pruned_at is None or now - self._pruned_at > timedelta(hours=1)
                with self.db.begin() as conn:
                    intake_counts.add(conn, rows)
                    inbox.add(conn, inbox_rows, self.inbox_keep)
                    if prune:
                        intake_counts.prune(conn, now - RETENTION)
                if prune:
                    self._pruned_at = now
            except Exception:
                log.warning(
                    "could not write the intake counts; keeping them for the next flush",
                    exc_info=True,
                    extra={"action": "intake.tally_failed"},
                )
                self._give_back(counts, deliveries)
                return 0
            return len(rows)
