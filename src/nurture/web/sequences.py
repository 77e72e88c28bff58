"""Admin API for sequences: definitions, enrollments with per-step status and a funnel,
manual enrol and exit (``/api/v1/sequences``, ``/api/v1/enrollments``)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field, model_validator

from nurture.bootstrap import Container
from nurture.errors import Conflict, NotFound
from nurture.sequences import SequenceService, enroll_contact, exit_enrollment
from nurture.storage import enrollments as store
from nurture.web.auth import require_api_key
from nurture.web.state import web_state

router = APIRouter(prefix="/api/v1", dependencies=[Depends(require_api_key)], tags=["sequences"])


class StepOut(BaseModel):
    step_id: str
    position: int
    status: str
    due_at: datetime | None = None
    sent_at: datetime | None = None
    template: str | None = None
    reason: str | None = None


class EnrollmentOut(BaseModel):
    id: int
    sequence_id: str
    key: str
    contact_id: int
    status: str
    anchor_at: datetime
    enrolled_at: datetime
    ended_at: datetime | None = None
    end_reason: str | None = None
    event_id: int | None = None
    rule_id: str | None = None
    reschedules: int
    steps: list[StepOut] = Field(default_factory=list)


class FunnelStep(BaseModel):
    step_id: str
    scheduled: int = 0
    sent: int = 0
    skipped: int = 0
    cancelled: int = 0


class Funnel(BaseModel):
    enrolled: int
    active: int
    completed: int
    exited: dict[str, int]
    cancelled: dict[str, int]
    steps: list[FunnelStep]


class EnrollmentPage(BaseModel):
    sequence_id: str
    funnel: Funnel
    items: list[EnrollmentOut]
    next_before: int | None = None


class EnrollIn(BaseModel):
    contact_id: int | None = None
    email: str | None = None
    key: str | None = Field(None, description="Required when the sequence is not keyed by contact")
    anchor: datetime | None = Field(None, description="Required when the sequence has anchor:")

    @model_validator(mode="after")
    def _who(self) -> EnrollIn:
        if (self.contact_id is None) == (self.email is None):
            raise ValueError("give exactly one of contact_id or email")
        if self.anchor is not None and self.anchor.tzinfo is None:
            raise ValueError("anchor needs a UTC offset")
        return self


class EnrollOut(BaseModel):
    status: str = Field(description="enrolled, duplicate, tombstoned or not_reentering")
    enrollment: EnrollmentOut | None = None


class ExitIn(BaseModel):
    reason: str = Field("api", max_length=200)


def _service(request: Request) -> SequenceService:
    """The automation folder's sequences, compiled once per app."""
    state = request.app.state
    service: SequenceService | None = getattr(state, "sequence_service", None)
    if service is None:
        from nurture.sequences.models import load

        s = web_state(request).container.settings
        service = SequenceService(load(s.automation_dir), time_scale=s.time_scale)
        state.sequence_service = service
    return service


def _container(request: Request) -> Container:
    return web_state(request).container


def _with_steps(rows: list[dict[str, Any]], steps: dict[int, list[dict[str, Any]]]) -> list[Any]:
    return [{**row, "steps": steps.get(row["id"], [])} for row in rows]


@router.get("/sequences")
def list_sequences(request: Request) -> dict[str, Any]:
    service = _service(request)
    with _container(request).db.read() as conn:
        counts = store.status_counts(conn)
    return {
        "items": [
            {**seq.describe(), "where": seq.where, "enrollments": counts.get(seq.id, {})}
            for seq in service.book.sequences
        ]
    }


@router.get("/sequences/{sequence_id}/enrollments", response_model=EnrollmentPage)
def list_enrollments(
    request: Request,
    sequence_id: str,
    status: str | None = Query(None, pattern="^(active|completed|exited|cancelled)$"),
    contact_id: int | None = Query(None),
    before: int | None = Query(None, description="Cursor: the last id of the previous page"),
    limit: int = Query(50, ge=1, le=500),
) -> dict[str, Any]:
    seq = _service(request).sequence(sequence_id)
    with _container(request).db.read() as conn:
        rows = store.search(
            conn, seq.id, status=status, contact_id=contact_id, before_id=before, limit=limit
        )
        steps = store.steps(conn, [r["id"] for r in rows])
        counts = store.status_counts(conn).get(seq.id, {})
        reasons = store.end_reasons(conn, seq.id)
        per_step = store.funnel(conn, seq.id)
    funnel = {
        "enrolled": sum(counts.values()),
        "active": counts.get("active", 0),
        "completed": counts.get("completed", 0),
        "exited": reasons.get("exited", {}),
        "cancelled": reasons.get("cancelled", {}),
        "steps": [{"step_id": st.id, **per_step.get(st.id, {})} for st in seq.steps],
    }
    return {
        "sequence_id": seq.id,
        "funnel": funnel,
        "items": _with_steps(rows, steps),
        "next_before": rows[-1]["id"] if len(rows) == limit else None,
    }


@router.post("/sequences/{sequence_id}/enroll", response_model=EnrollOut)
def enroll(request: Request, sequence_id: str, body: EnrollIn) -> Any:
    """Enrol a contact now. 201 when enrolled; 200 with the reason when it was a no-op."""
    c = _container(request)
    result, row = enroll_contact(
        c.db,
        _service(request),
        sequence_id,
        now=c.clock.now(),
        partitions=c.settings.partitions,
        contact_id=body.contact_id,
        email=body.email,
        key=body.key,
        anchor=body.anchor,
    )
    enrollment = None
    if row is not None:
        with c.db.read() as conn:
            enrollment = _with_steps([row], store.steps(conn, [row["id"]]))[0]
    out = EnrollOut.model_validate({"status": result.status, "enrollment": enrollment})
    return JSONResponse(out.model_dump(mode="json"), status_code=201 if result.created else 200)


@router.post("/enrollments/{enrollment_id}/exit", response_model=EnrollmentOut)
def exit_(request: Request, enrollment_id: int, body: ExitIn | None = None) -> dict[str, Any]:
    """Exit a live enrollment (its pending steps are cancelled); 409 if it already ended."""
    c = _container(request)
    ended, row = exit_enrollment(
        c.db,
        _service(request),
        enrollment_id,
        (body or ExitIn()).reason,
        now=c.clock.now(),
        partitions=c.settings.partitions,
    )
    if not ended:
        raise Conflict(f"enrollment {enrollment_id} is already {row['status']}")
    with c.db.read() as conn:
        return dict(_with_steps([row], store.steps(conn, [row["id"]]))[0])


@router.get("/enrollments/{enrollment_id}", response_model=EnrollmentOut)
def get_enrollment(request: Request, enrollment_id: int) -> dict[str, Any]:
    with _container(request).db.read() as conn:
        row = store.get(conn, enrollment_id)
        if row is None:
            raise NotFound(f"no enrollment {enrollment_id}")
        return dict(_with_steps([row], store.steps(conn, [row["id"]]))[0])
