"""Segmentations and lead scores of contacts changed outside an event.

Segments and the score are derived in one place, the rules step, while an event is processed:
that is where score changes are ledgered and explained on the timeline, and where
``segment.changed`` and ``score.crossed`` are derived (and rules react to them). A change made
outside an event therefore queues a ``contact.changed`` event for the contact, in the
transaction that makes the change; processing it recomputes everything exactly as any event
does, in the contact's partition (so never racing its other events).

* One contact (a re-subscribe through the API): ``queue_changed`` directly.
* A bulk change (the full RFM pass rewrites every buyer's figures): ``request`` enqueues a
  ``rules_refresh`` job in the caller's transaction. The job computes, page by page, every
  contact's segmentations and lead score from what is stored and queues ``contact.changed``
  only where one of them differs. Done in the worker rather than in the pass, because
  evaluating the segmentations' CEL for every contact and queueing the catch-up of a fresh
  import (a hundred thousand contacts never scored) would make the pass take minutes.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import Any

from sqlalchemy import Connection

from nurture import jobs
from nurture.analytics import scoring
from nurture.config import Settings
from nurture.core.events import ContactRef, content_hash, partition_for
from nurture.database.engine import Database
from nurture.rules.book import Automation, load
from nurture.rules.segments import assign, contact_fields
from nurture.storage import contacts as contact_store
from nurture.storage import events as event_store
from nurture.storage import segments as segment_store

log = logging.getLogger("nurture.rules")

CHANGED = "contact.changed"
REFRESH_JOB = "rules_refresh"
SOURCE = "derived"
PAGE = 1000
# The contact view's fields that are columns of the same name (``identities`` is not).
_COLUMNS = frozenset(
    {
        "email",
        "first_name",
        "last_name",
        "phone",
        "time_zone",
        "attributes",
        "tags",
        "segments",
        "status",
        "score",
        "rfm",
    }
)


# -- queueing contact.changed -------------------------------------------------------------------


def _event_row(
    contact_id: int, ref: ContactRef, partition: int, now: datetime, reason: str, salt: str
) -> dict[str, Any]:
    return {
        "source": SOURCE,
        "type": CHANGED,
        # A redone transaction or a job run twice queues nothing twice.
        "dedupe_key": "derived:" + content_hash(CHANGED, reason, salt, contact_id),
        "partition": partition,
        "status": "pending",
        "available_at": now,
        "contact_key": None,
        "contact_id": contact_id,
        "raw": None,
        "content_type": None,
        "canonical": {
            "type": CHANGED,
            "occurred_at": now.isoformat(),
            "contact": {"email": ref.email} if ref.email else ref.to_json(),
            "data": {"reason": reason},
        },
        "received_at": now,
        "occurred_at": now,
        "depth": 1,
        "parent_id": None,
    }


def _queue(
    conn: Connection,
    refs: Mapping[int, ContactRef],
    now: datetime,
    reason: str,
    salt: str,
) -> int:
    """One ``contact.changed`` per contact not already waiting for one; returns how many."""
    ids = sorted(cid for cid, ref in refs.items() if ref.key is not None)
    if not ids:
        return 0
    waiting = segment_store.pending_of_type(conn, CHANGED, ids)
    ids = [cid for cid in ids if cid not in waiting]
    partitions = segment_store.latest_partitions(conn, ids)
    fallback = int(Settings.model_fields["partitions"].default)
    rows = []
    for cid in ids:
        ref = refs[cid]
        # The partition of the contact's newest event keeps this one in order with the rest.
        partition = partitions.get(cid, partition_for(ref.key, fallback))
        rows.append(_event_row(cid, ref, partition, now, reason, salt))
    return len(event_store.insert_new(conn, rows))


def queue_changed(conn: Connection, contact_ids: Iterable[int], now: datetime, reason: str) -> int:
    """Queue ``contact.changed`` for these contacts (in the caller's transaction)."""
    refs = {
        s.id: ContactRef(email=s.email, identities=dict(s.identities))
        for s in contact_store.load_many(conn, ids=sorted(set(contact_ids)))
    }
    return _queue(conn, refs, now, reason, now.isoformat())


# -- the bulk refresh ---------------------------------------------------------------------------


def request(conn: Connection, now: datetime, reason: str) -> None:
    """Ask the worker to bring every contact's segments and score up to date (see module)."""
    jobs.enqueue(
        conn,
        kind=REFRESH_JOB,
        key=f"{REFRESH_JOB}:{reason}:{now:%Y%m%dT%H%M%S%fZ}",
        run_at=now,
        payload={"reason": reason},
        now=now,
    )


class Checker:
    """Which stored contacts' segments or score differ from what they would be now."""

    def __init__(self, automation: Automation) -> None:
        self.automation = automation
        wanted: set[str] | None = {"segments", "score", "rfm"}
        for seg in automation.segmentations:
            fields = contact_fields(seg)
            wanted = None if fields is None or wanted is None else wanted | fields
        # A segmentation reading the whole contact (or a field that is no column): full states.
        self.whole = wanted is None or not wanted <= _COLUMNS | {"id"}
        self.columns = sorted(_COLUMNS if self.whole else (wanted or set()) & _COLUMNS)

    def stale(
        self,
        rows: Sequence[Mapping[str, Any]],
        identities: Mapping[int, Mapping[str, str]],
        now: datetime,
    ) -> list[int]:
        spec = self.automation.scoring
        out = []
        for row in rows:
            rfm = row.get("rfm") or {}
            inputs = scoring.inputs_for(spec, rfm, row.get("engagement") or {}, now)
            if scoring.compute(spec, inputs).total != row["score"]:
                out.append(row["id"])
                continue
            if not self.automation.segmentations:
                continue
            segments = dict(row.get("segments") or {})
            view = {name: row[name] for name in self.columns}
            view.update(id=row["id"], rfm=rfm, segments=segments)
            if self.whole:
                view["identities"] = dict(identities.get(row["id"], {}))
            values = assign(self.automation.segmentations, view, now).values
            if any(segments.get(name) != value for name, value in values.items()):
                out.append(row["id"])
        return out


def refresh_page(
    conn: Connection,
    checker: Checker,
    after_id: int,
    now: datetime,
    reason: str,
    salt: str,
    limit: int = PAGE,
) -> tuple[int | None, int]:
    """Check one page of contacts; returns (the last id, or None at the end; how many queued)."""
    rows = segment_store.page(conn, after_id, limit, checker.columns)
    if not rows:
        return None, 0
    identities = (
        {s.id: s.identities for s in contact_store.load_many(conn, ids=[r["id"] for r in rows])}
        if checker.whole
        else {}
    )
    by_id = {r["id"]: r for r in rows}
    refs = {}
    for cid in checker.stale(rows, identities, now):
        row = by_id[cid]
        idents = identities.get(cid)
        if idents is None and not row["email"]:
            idents = contact_store.load_many(conn, ids=[cid])[0].identities
        refs[cid] = ContactRef(email=row["email"], identities=dict(idents or {}))
    queued = _queue(conn, refs, now, reason, salt)
    return (rows[-1]["id"] if len(rows) == limit else None), queued


def run_refresh(db: Database, automation_dir: Path | None, ctx: jobs.JobContext) -> None:
    checker = Checker(load(automation_dir))
    reason = str(ctx.payload.get("reason") or "refresh")
    after: int | None = 0
    queued = 0
    while after is not None:
        with db.begin() as conn:
            after, n = refresh_page(conn, checker, after, ctx.now, reason, ctx.key)
        queued += n
        ctx.heartbeat()
    log.info(
        "segments and scores refreshed",
        extra={"action": "rules.refresh", "reason": reason, "queued": queued},
    )


def register(registry: jobs.HandlerRegistry, db: Database, automation_dir: Path | None) -> None:
    registry.register(REFRESH_JOB, partial(run_refresh, db, automation_dir), max_attempts=5)
