"""Operator actions on single jobs, shared by the CLI and the admin API."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Connection

from nurture.database.engine import Database
from nurture.errors import Conflict, FieldProblem, InvalidFields, NotFound
from nurture.storage import audit
from nurture.storage import jobs as store

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


def _audit(
    conn: Connection,
    row: dict[str, Any],
    action: str,
    now: datetime,
    actor: str | None,
    client_addr: str | None,
    was: str,
) -> None:
    if actor is None:
        return
    audit.record(
        conn,
        at=now,
        actor=actor,
        action=action,
        target_kind="job",
        target_id=str(row["id"]),
        detail={"kind": row["kind"], "key": row["key"], "was": was},
        client_addr=client_addr,
    )


def retry_job(
    db: Database,
    job_id: int,
    now: datetime,
    *,
    actor: str | None = None,
    client_addr: str | None = None,
) -> dict[str, Any]:
    """Run a dead (or failed, waiting) job again now with fresh attempts. With ``actor``, the
    audit log records who did it, in the same transaction."""
    with db.begin() as conn:
        was = store.retry(conn, job_id, now)
        if was is None:
            raise NotFound(f"no job {job_id}")
        if was not in ("dead", "failed"):
            raise Conflict(f"job {job_id} is {was}; only dead or failed jobs can be retried")
        store.note_enqueued(conn, now, now)
        row = store.get(conn, job_id)
        assert row is not None
        _audit(conn, row, "job.retry", now, actor, client_addr, was)
    return row


def cancel_job(
    db: Database,
    job_id: int,
    now: datetime,
    *,
    actor: str | None = None,
    client_addr: str | None = None,
) -> dict[str, Any]:
    with db.begin() as conn:
        before = store.get(conn, job_id)
        if not store.cancel_id(conn, job_id, now):
            if before is None:
                raise NotFound(f"no job {job_id}")
            raise Conflict(f"job {job_id} is {before['status']} and cannot be cancelled")
        row = store.get(conn, job_id)
        assert row is not None and before is not None
        _audit(conn, row, "job.cancel", now, actor, client_addr, before["status"])
    return row
