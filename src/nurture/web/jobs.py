"""Admin API for jobs: list, retry a dead one, cancel one (``/api/v1/jobs``)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel

from nurture.jobs import manage
from nurture.web.auth import require_api_key
from nurture.web.state import web_state

router = APIRouter(prefix="/api/v1", dependencies=[Depends(require_api_key)], tags=["jobs"])

STATUS_PATTERN = "^(" + "|".join(manage.STATUSES) + ")$"


class JobOut(BaseModel):
    id: int
    kind: str
    key: str
    status: str
    run_at: datetime
    attempts: int
    max_attempts: int | None = None
    lease_until: datetime | None = None
    worker: str | None = None
    payload: dict[str, Any]
    last_error: str | None = None
    contact_id: int | None = None
    enrollment_id: int | None = None
    cancelled_at: datetime | None = None
    created_at: datetime
    updated_at: datetime


class JobPage(BaseModel):
    items: list[JobOut]
    next_before: int | None = None


@router.get("/jobs", response_model=JobPage)
def list_jobs(
    request: Request,
    status: str | None = Query(None, pattern=STATUS_PATTERN),
    kind: str | None = Query(None),
    contact_id: int | None = Query(None),
    before: int | None = Query(None, description="Cursor: the last id of the previous page"),
    limit: int = Query(50, ge=1, le=500),
) -> dict[str, Any]:
    db = web_state(request).container.db
    rows = manage.list_jobs(
        db, status=status, kind=kind, contact_id=contact_id, before_id=before, limit=limit
    )
    return {"items": rows, "next_before": rows[-1]["id"] if len(rows) == limit else None}


@router.get("/jobs/{job_id}", response_model=JobOut)
def get_job(request: Request, job_id: int) -> dict[str, Any]:
    return manage.get_job(web_state(request).container.db, job_id)


@router.post("/jobs/{job_id}/retry", response_model=JobOut)
def retry_job(request: Request, job_id: int) -> dict[str, Any]:
    """Run a dead (or failed, waiting) job again now with fresh attempts; 409 otherwise."""
    c = web_state(request).container
    return manage.retry_job(c.db, job_id, c.clock.now())


@router.post("/jobs/{job_id}/cancel", response_model=JobOut)
def cancel_job(request: Request, job_id: int) -> dict[str, Any]:
    """Cancel a waiting, running or dead job (a running attempt finishes; none follows)."""
    c = web_state(request).container
    return manage.cancel_job(c.db, job_id, c.clock.now())
