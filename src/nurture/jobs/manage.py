"""Operator actions on single jobs, shared by the CLI and the admin API."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from nurture.errors import Conflict, FieldProblem, InvalidFields, NotFound
from nurture.storage import jobs as store
from nurture.storage.engine import Database

STATUSES = store.STATUSES


def list_jobs(
    db: Database,
    *,
    status: str | None = None,
    kind: str | None = None,
    contact_id: int | None = None,
    before_id: int | None = None,
    limit: int = 50,
) -> list[dict[str, Any]]:
    if status is not None and status not in STATUSES:
        raise InvalidFields([FieldProblem("status", f"must be one of {', '.join(STATUSES)}")])
    with db.read() as conn:
        return store.search(
            conn, status=status, kind=kind, contact_id=contact_id, before_id=before_id, limit=limit
        )


def get_job(db: Database, job_id: int) -> dict[str, Any]:
    with db.read() as conn:
        row = store.get(conn, job_id)
    if row is None:
        raise NotFound(f"no job {job_id}")
    return row


def retry_job(db: Database, job_id: int, now: datetime) -> dict[str, Any]:
    """Run a dead (or failed, waiting) job again now with fresh attempts."""
    with db.begin() as conn:
        was = store.retry(conn, job_id, now)
        if was is None:
            raise NotFound(f"no job {job_id}")
        if was not in ("dead", "failed"):
            raise Conflict(f"job {job_id} is {was}; only dead or failed jobs can be retried")
        store.note_enqueued(conn, now, now)
        row = store.get(conn, job_id)
    assert row is not None
    return row


def cancel_job(db: Database, job_id: int, now: datetime) -> dict[str, Any]:
    with db.begin() as conn:
        if not store.cancel_id(conn, job_id, now):
            row = store.get(conn, job_id)
            if row is None:
                raise NotFound(f"no job {job_id}")
            raise Conflict(f"job {job_id} is {row['status']} and cannot be cancelled")
        row = store.get(conn, job_id)
    assert row is not None
    return row
