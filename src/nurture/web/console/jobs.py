"""``/console/jobs``: counts by kind and state, how late due jobs are, the dead, late and
running jobs, one job's page, and replay (retry) or cancel through ``jobs.manage``."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from datetime import timedelta
from typing import Any

from fastapi import APIRouter, Depends, Request
from starlette.responses import RedirectResponse, Response

from nurture.accounts.sessions import Session
from nurture.core import redact
from nurture.errors import NotFound
from nurture.jobs import manage
from nurture.storage import audit
from nurture.storage import jobs as store
from nurture.web.console.charts import bars
from nurture.web.console.render import duration, render
from nurture.web.console.security import admin, client_addr, viewer
from nurture.web.console.snapshot import Snapshot
from nurture.web.state import WebState, web_state

router = APIRouter(prefix="/console", include_in_schema=False)
NAV = ("Jobs", "/console/jobs")

STATES = ("scheduled", "running", "failed", "dead", "done", "cancelled")
LISTS = {
    "dead": "Dead jobs",
    "late": "Due, longest waiting first",
    "running": "Running",
    "recent": "Most recent",
}
LATENESS_EDGES = [
    timedelta(seconds=1),
    timedelta(seconds=10),
    timedelta(minutes=1),
    timedelta(minutes=10),
    timedelta(hours=1),
]
LATENESS_LABELS = ["< 1 s", "1-10 s", "10 s-1 min", "1-10 min", "10 min-1 h", "> 1 h"]
DONE = {
    "retried": "The job will run again now, with fresh attempts.",
    "cancelled": "The job is cancelled; it will not run again.",
}
COUNTS_MAX_AGE = 60.0


def _counts(state: WebState) -> Snapshot[dict[tuple[str, str], int]]:
    """One snapshot per app of the whole-table count (see ``snapshot``)."""
    found = state.sources.get("__console_job_counts__")
    if found is None:
        db = state.container.db

        def compute() -> dict[tuple[str, str], int]:
            with db.read() as conn:
                return store.count_by_kind_status(conn)

        found = Snapshot(compute, COUNTS_MAX_AGE, state.container.clock.now)
        state.sources["__console_job_counts__"] = found
    assert isinstance(found, Snapshot)
    return found


def _table(counts: dict[tuple[str, str], int] | None) -> list[dict[str, Any]]:
    if counts is None:
        return []
    by_kind: dict[str, dict[str, int]] = defaultdict(dict)
    for (kind, status), n in counts.items():
        by_kind[kind][status] = n
    return [
        {"kind": kind, "states": states, "total": sum(states.values())}
        for kind, states in sorted(by_kind.items())
    ]


def _parse_id(raw: str) -> int:
    if not raw.isdigit() or len(raw) > 18:
        raise NotFound(f"no job {raw[:40]!r}")
    return int(raw)


@router.get("/jobs")
def jobs_page(
    request: Request,
    show: str = "dead",
    kind: str = "",
    before: str = "",
    done: str = "",
    session: Session = Depends(viewer),
) -> Response:
    state = web_state(request)
    container = state.container
    now = container.clock.now()
    show = show if show in LISTS else "dead"
    before_id = int(before) if before.isdigit() and len(before) < 19 else None
    counts, counted_at = _counts(state).get()
    with container.db.read() as conn:
        histogram = store.lateness_histogram(conn, now, LATENESS_EDGES)
        if show == "dead":
            rows = store.dead(conn, kind=kind or None, before_id=before_id)
        elif show == "late":
            rows = store.most_late(conn, now)
        elif show == "running":
            rows = store.running(conn)
        else:
            rows = store.search(conn, before_id=before_id)
    kinds = sorted({k for k, _ in counts or {}})
    return render(
        request,
        session,
        "jobs.html",
        title="Jobs",
        now=now,
        states=STATES,
        table=_table(counts),
        counted_at=counted_at,
        counting=counts is None,
        refresh=3 if counts is None else 0,
        kinds=kinds,
        kind=kind,
        show=show,
        lists=LISTS,
        rows=rows,
        next_before=rows[-1]["id"] if len(rows) == 50 and show in ("dead", "recent") else None,
        lateness=bars(histogram, LATENESS_LABELS, title="due jobs by lateness", kind="warn"),
        lateness_rows=list(zip(LATENESS_LABELS, histogram, strict=True)),
        done_message=DONE.get(done),
        duration=duration,
    )


@router.get("/jobs/{job_id}")
def job_page(request: Request, job_id: str, session: Session = Depends(viewer)) -> Response:
    container = web_state(request).container
    job = manage.get_job(container.db, _parse_id(job_id))
    with container.db.read() as conn:
        history = audit.recent(conn, target_kind="job", target_id=str(job["id"]), limit=20)
    return render(
        request,
        session,
        "job.html",
        title=f"Job {job['id']}",
        job=job,
        payload=redact.payload(_json_bytes(job["payload"])),
        history=history,
        now=container.clock.now(),
    )


def _json_bytes(value: Any) -> bytes:
    import orjson

    return orjson.dumps(value)


def _change(request: Request, session: Session, job_id: int, action: str) -> dict[str, Any]:
    """``manage.retry_job``/``cancel_job``, which audit the change in its own transaction."""
    state = web_state(request)
    container = state.container
    run = manage.retry_job if action == "retried" else manage.cancel_job
    job = run(
        container.db,
        job_id,
        container.clock.now(),
        actor=session.actor,
        client_addr=client_addr(request),
    )
    _counts(state).expire()
    return job


def _back(job_id: int, action: str, to: object) -> Response:
    target = f"/console/jobs/{job_id}" if to != "list" else "/console/jobs"
    return RedirectResponse(f"{target}?done={action}", status_code=303)


@router.post("/jobs/{job_id}/retry")
async def retry(request: Request, job_id: str, session: Session = Depends(admin)) -> Response:
    job_number = _parse_id(job_id)
    await asyncio.to_thread(_change, request, session, job_number, "retried")
    return _back(job_number, "retried", (await request.form()).get("back"))


@router.post("/jobs/{job_id}/cancel")
async def cancel(request: Request, job_id: str, session: Session = Depends(admin)) -> Response:
    job_number = _parse_id(job_id)
    await asyncio.to_thread(_change, request, session, job_number, "cancelled")
    return _back(job_number, "cancelled", (await request.form()).get("back"))
