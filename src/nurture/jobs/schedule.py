"""Enqueue, cancel and move jobs inside the caller's transaction (the outbox pattern).

A contact change and the jobs it causes commit together or not at all: these functions only
write through the ``Connection`` they are given and never commit.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection

from nurture.clock import SystemClock, ensure_utc, scale_delay
from nurture.errors import FieldProblem, InvalidFields
from nurture.storage import jobs as store

MAX_KEY_LENGTH = 300
MAX_KIND_LENGTH = 64


@dataclass(frozen=True, slots=True)
class JobRef:
    id: int
    key: str
    kind: str
    status: str
    run_at: datetime
    created: bool
    # True when ``replace=True`` overwrote an existing job that had not started.
    replaced: bool = False


@dataclass(frozen=True, slots=True)
class JobSpec:
    """One job for ``enqueue_many``; the fields mean what ``enqueue``'s arguments mean."""

    kind: str
    key: str
    run_at: datetime
    payload: dict[str, Any]
    contact_id: int | None = None
    enrollment_id: int | None = None
    max_attempts: int | None = None


def due_at(now: datetime, delay: timedelta, time_scale: float) -> datetime:
    """When a job ``delay`` from ``now`` is due, with ``NURTURE_TIME_SCALE`` applied."""
    return ensure_utc(now) + scale_delay(delay, time_scale)


def _now(now: datetime | None) -> datetime:
    # Only bookkeeping (created/updated) falls back to the wall clock; run_at is always given.
    return ensure_utc(now) if now is not None else SystemClock().now()


def _validate(kind: str, key: str, max_attempts: int | None) -> None:
    problems = []
    if not kind or len(kind) > MAX_KIND_LENGTH:
        problems.append(FieldProblem("kind", f"must be 1 to {MAX_KIND_LENGTH} characters"))
    if not key or len(key) > MAX_KEY_LENGTH:
        problems.append(FieldProblem("key", f"must be 1 to {MAX_KEY_LENGTH} characters"))
    if max_attempts is not None and max_attempts < 1:
        problems.append(FieldProblem("max_attempts", "must be at least 1"))
    if problems:
        raise InvalidFields(problems)


def _row(spec: JobSpec, now: datetime) -> dict[str, Any]:
    _validate(spec.kind, spec.key, spec.max_attempts)
    return {
        "kind": spec.kind,
        "key": spec.key,
        "status": "scheduled",
        "run_at": ensure_utc(spec.run_at),
        "attempts": 0,
        "max_attempts": spec.max_attempts,
        "payload": spec.payload,
        "contact_id": spec.contact_id,
        "enrollment_id": spec.enrollment_id,
        "created_at": now,
        "updated_at": now,
    }


def _ref(row: dict[str, Any], *, created: bool, replaced: bool = False) -> JobRef:
    return JobRef(
        id=row["id"],
        key=row["key"],
        kind=row["kind"],
        status=row["status"],
        run_at=row["run_at"],
        created=created,
        replaced=replaced,
    )


def enqueue(
    conn: Connection,
    *,
    kind: str,
    key: str,
    run_at: datetime,
    payload: dict[str, Any],
    contact_id: int | None = None,
    enrollment_id: int | None = None,
    max_attempts: int | None = None,
    replace: bool = False,
    now: datetime | None = None,
) -> JobRef:
    """Schedule ``kind`` at ``run_at`` once per ``key``.

    An existing key is left alone and returned (``created=False``): enqueueing is idempotent,
    so a retried caller never schedules twice. ``replace=True`` overwrites the existing job
    with these values when it has not started (or was cancelled); a job that ran or is running
    is never replaced.
    """
    stamp = _now(now)
    spec = JobSpec(kind, key, run_at, payload, contact_id, enrollment_id, max_attempts)
    row = _row(spec, stamp)
    job_id = store.insert(conn, row)
    if job_id is not None:
        store.note_enqueued(conn, row["run_at"], stamp)
        return JobRef(job_id, key, kind, "scheduled", row["run_at"], created=True)
    replaced = False
    if replace:
        values = {k: row[k] for k in ("kind", "run_at", "max_attempts", "payload")}
        values.update(contact_id=contact_id, enrollment_id=enrollment_id, updated_at=stamp)
        replaced = store.replace_unstarted(conn, key, values)
        if replaced:
            store.note_enqueued(conn, row["run_at"], stamp)
    existing = store.get_by_key(conn, key)
    if existing is None:  # deleted between the two statements: only a manual DELETE does that
        raise RuntimeError(f"job {key!r} vanished while being enqueued")
    return _ref(existing, created=False, replaced=replaced)


def enqueue_many(conn: Connection, specs: Sequence[JobSpec], *, now: datetime | None = None) -> int:
    """Enqueue a batch in one statement (keys already present are skipped); returns how many
    were new. For bulk scheduling (campaigns, imports) where per-job results are not needed."""
    if not specs:
        return 0
    stamp = _now(now)
    rows = [_row(spec, stamp) for spec in specs]
    created = store.insert_many(conn, rows)
    if created:
        store.note_enqueued(conn, min(r["run_at"] for r in rows), stamp)
    return created


def cancel(conn: Connection, key: str, *, now: datetime | None = None) -> bool:
    """Cancel the job with ``key``: it will not start again.

    True when the cancel took effect: a waiting job never runs; a running attempt finishes
    (its effect may happen) but is never retried. False for unknown, finished or already
    cancelled jobs.
    """
    return store.cancel(conn, key, _now(now))


def cancel_where(
    conn: Connection,
    *,
    contact_id: int | None = None,
    enrollment_id: int | None = None,
    kinds: Sequence[str] | None = None,
    now: datetime | None = None,
) -> int:
    """Cancel every job linked to a contact and/or an enrollment (optionally only ``kinds``)."""
    if contact_id is None and enrollment_id is None:
        raise InvalidFields(
            [FieldProblem("contact_id", "cancel_where needs a contact_id or an enrollment_id")]
        )
    return store.cancel_where(
        conn, _now(now), contact_id=contact_id, enrollment_id=enrollment_id, kinds=kinds
    )


def reschedule(
    conn: Connection, key: str, run_at: datetime, *, now: datetime | None = None
) -> bool:
    """Move a waiting job to ``run_at``; False if it is running, finished, cancelled or unknown."""
    when, stamp = ensure_utc(run_at), _now(now)
    moved = store.reschedule(conn, key, when, stamp)
    if moved:
        store.note_enqueued(conn, when, stamp)
    return moved
