"""``/console``: what came in, what went out and how the queue is doing, over 24 h or 7 days.

Reads the hourly roll-ups (``intake_counts``), ``ix_messages_sent_at`` and the job table's
partial indexes: a few hundred rows whatever the size of the events and jobs tables.
"""

from __future__ import annotations

import itertools
import threading
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from fastapi import APIRouter, Depends, Request
from starlette.responses import Response

from nurture.accounts.sessions import Session
from nurture.intake.tally import RETENTION
from nurture.storage import intake_counts, messages
from nurture.storage import jobs as job_store
from nurture.web.console.charts import bars
from nurture.web.console.render import render
from nurture.web.console.security import viewer
from nurture.web.state import web_state

router = APIRouter(prefix="/console", include_in_schema=False)
NAV = ("Overview", "/console")

LATE_AFTER = timedelta(seconds=60)
EMAIL = ("delivered", "opened", "clicked", "bounced", "complained", "unsubscribed")
BAD_EMAIL = {"bounced", "complained", "unsubscribed"}
REASON_LABELS = {
    "bad_signature": "bad signature",
    "stale_timestamp": "stale timestamp",
    "schema_error": "schema error",
    "malformed": "malformed body",
    "too_large": "too large",
    "media_type": "wrong content type",
    "forbidden": "forbidden",
    "not_configured": "not configured",
    "unavailable": "database unavailable",
    "error": "server error",
}


@dataclass(frozen=True)
class Window:
    key: str
    label: str
    span: timedelta
    step: timedelta

    def buckets(self, now: datetime) -> list[datetime]:
        """Bucket starts, oldest first; the last one holds ``now``."""
        current = now.replace(minute=0, second=0, microsecond=0)
        current -= timedelta(hours=current.hour % int(self.step.total_seconds() // 3600))
        count = int(self.span / self.step)
        return [current - self.step * (count - 1 - i) for i in range(count)]


WINDOWS = {
    "24h": Window("24h", "last 24 hours", timedelta(hours=24), timedelta(hours=1)),
    "7d": Window("7d", "last 7 days", timedelta(days=7), timedelta(hours=6)),
}


class Series:
    """Counts per period, by name."""

    def __init__(self, starts: list[datetime]) -> None:
        self.starts = starts
        self.step = starts[1] - starts[0] if len(starts) > 1 else timedelta(hours=1)
        self.values: dict[str, list[int]] = defaultdict(lambda: [0] * len(starts))

    def add(self, name: str, period: int, n: int) -> None:
        if 0 <= period < len(self.starts):
            self.values[name][period] += n

    def total(self, name: str) -> int:
        return sum(self.values[name]) if name in self.values else 0

    def chart(self, name: str, title: str, kind: str = "default") -> Any:
        fmt = "%a %H:00" if self.step >= timedelta(hours=6) else "%H:00"
        labels = [s.strftime(fmt) for s in self.starts]
        values = self.values[name] if name in self.values else [0] * len(self.starts)
        return bars(values, labels, title=title, kind=kind)


def _source() -> dict[str, Any]:
    return {"events": 0, "accepted": 0, "duplicate": 0, "rejected": {}, "rejected_total": 0}


class SentCounts:
    """Messages sent per period, remembered once a period is over: ``sent_at`` is written
    once, when the provider took the message, so a closed period's count does not change (a
    margin covers sends committed late). A week's overview then counts only its last period."""

    MARGIN = timedelta(minutes=5)

    def __init__(self) -> None:
        self._closed: dict[tuple[datetime, datetime], int] = {}
        self._lock = threading.Lock()

    def counts(self, conn: Any, edges: list[datetime], now: datetime) -> list[int]:
        periods = list(itertools.pairwise(edges))
        with self._lock:
            known = {p: self._closed[p] for p in periods if p in self._closed}
        missing = [p for p in periods if p not in known]
        # Adjacent unknown periods are counted in one pass of the index each.
        for (low, high), n in zip(missing, _counted(conn, missing), strict=True):
            known[low, high] = n
        with self._lock:
            for (low, high), n in known.items():
                if high <= now - self.MARGIN:
                    self._closed[low, high] = n
            for key in [k for k in self._closed if k[1] < now - timedelta(days=8)]:
                del self._closed[key]
        return [known[p] for p in periods]


def _counted(conn: Any, periods: list[tuple[datetime, datetime]]) -> list[int]:
    out: list[int] = []
    run: list[datetime] = []
    for low, high in periods:
        if run and run[-1] != low:
            out += messages.sent_per_period(conn, run)
            run = []
        run = [*run, high] if run else [low, high]
    if run:
        out += messages.sent_per_period(conn, run)
    return out


sent = SentCounts()


def gather(conn: Any, now: datetime, window: Window) -> dict[str, Any]:
    starts = window.buckets(now)
    series = Series(starts)
    sources: dict[str, dict[str, Any]] = defaultdict(_source)
    step_hours = int(window.step.total_seconds() // 3600)
    for period, source, metric, n in intake_counts.series(conn, starts[0], step_hours):
        kind, _, name = metric.partition(":")
        if kind == "event":
            sources[source]["events"] += n
            series.add(f"in:{source}", period, n)
            series.add("in", period, n)
            series.add(name, period, n)
        elif kind == "delivery":
            sources[source][name] += n
        elif kind == "rejected":
            per = sources[source]["rejected"]
            per[name] = per.get(name, 0) + n
            sources[source]["rejected_total"] += n
            series.add("rejected", period, n)
    last = intake_counts.last_accepted(conn, now - RETENTION)
    for source in last:
        sources.setdefault(source, _source())  # quiet in this window, still listed
    edges = [*starts, starts[-1] + series.step]
    for period, n in enumerate(sent.counts(conn, edges, now)):
        series.add("email.sent", period, n)
    health = job_store.queue_health(conn, now, LATE_AFTER)
    return {
        "series": series,
        "sources": dict(sorted(sources.items())),
        "last": last,
        "health": health,
        "retention_days": RETENTION.days,
    }


@router.get("")
def overview(request: Request, window: str = "24h", session: Session = Depends(viewer)) -> Response:
    chosen = WINDOWS.get(window, WINDOWS["24h"])
    container = web_state(request).container
    now = container.clock.now()
    with container.db.read() as conn:
        data = gather(conn, now, chosen)
    health = data["health"]
    worst = (now - health["oldest_due"]).total_seconds() if health["oldest_due"] else 0.0
    return render(
        request,
        session,
        "overview.html",
        title="Overview",
        window=chosen,
        windows=WINDOWS.values(),
        now=now,
        email_kinds=("sent", *EMAIL),
        bad_email=BAD_EMAIL,
        reason_labels=REASON_LABELS,
        worst_lateness=worst if health["late"] else 0.0,
        late_after=LATE_AFTER,
        refresh=60,
        **data,
    )
