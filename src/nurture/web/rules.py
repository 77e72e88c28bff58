"""Admin API for rules: list, dry-run an event, a contact's score explanation, tasks."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel, Field

from nurture.automation.step import explain
from nurture.core.contacts import ContactState
from nurture.errors import NotFound
from nurture.integrations.outbound import dry_run_as_run
from nurture.rules.book import Automation, export_rules, load
from nurture.rules.dryrun import contact_from_json, event_from_json
from nurture.storage import contacts as contact_store
from nurture.storage import rule_fires
from nurture.storage import tasks as task_store
from nurture.web.admin import resolve_contact_id
from nurture.web.auth import require_api_key
from nurture.web.state import web_state

router = APIRouter(prefix="/api/v1", dependencies=[Depends(require_api_key)], tags=["rules"])


def automation(request: Request) -> Automation:
    """Loaded once per app from the same folder the worker uses."""
    cached: Automation | None = getattr(request.app.state, "rules_automation", None)
    if cached is None:
        cached = load(web_state(request).container.settings.automation_dir)
        request.app.state.rules_automation = cached
    return cached


class DryRunIn(BaseModel):
    event: dict[str, Any] = Field(..., description="{type, data, occurred_at?}")
    contact: dict[str, Any] | None = Field(
        None,
        description="A contact to test against; omitted: the stored contact named by "
        "contact_ref, else a new contact",
    )
    contact_ref: str | None = Field(None, description="Id or e-mail of a stored contact")


class TaskOut(BaseModel):
    id: int
    key: str
    contact_id: int | None = None
    event_id: int | None = None
    rule_id: str | None = None
    title: str
    kind: str
    priority: str | None = None
    status: str
    due_at: datetime
    created_at: datetime


class TaskPage(BaseModel):
    items: list[TaskOut]
    next_after: int | None = None


@router.get("/rules")
def list_rules(request: Request) -> dict[str, Any]:
    """The loaded rules in export form, in priority order, plus segmentations and scoring."""
    auto = automation(request)
    by_id = {r["id"]: r for r in export_rules(auto)}
    return {
        "rules": [by_id[r.id] for r in auto.ordered_rules],
        "segmentations": [
            s.spec.model_dump(mode="json", by_alias=True) for s in auto.segmentations
        ],
        "scoring": auto.scoring.model_dump(mode="json"),
    }


@router.post("/rules/dry-run")
def rules_dry_run(request: Request, body: DryRunIn) -> dict[str, Any]:
    """Which rules fire for the event and why, and the decisions. Nothing is changed."""
    container = web_state(request).container
    now = container.clock.now()
    event = event_from_json(body.event, now)
    history: dict[str, datetime] = {}
    contact: ContactState
    if body.contact is not None:
        contact = contact_from_json(body.contact)
    elif body.contact_ref is not None:
        contact_id = resolve_contact_id(request, body.contact_ref)
        with container.db.read() as conn:
            stored = contact_store.load(conn, contact_id)
            if stored is None:
                raise NotFound(f"no contact {body.contact_ref}")
            contact = stored
            history = rule_fires.last_fired(
                conn, contact.id, [r.id for r in automation(request).rules]
            )
    else:
        contact = contact_from_json(None)
    return dry_run_as_run(container.settings, automation(request), event, contact, now, history)


@router.get("/contacts/{ref}/score", tags=["contacts"])
def contact_score(request: Request, ref: str) -> dict[str, Any]:
    """The lead score: total, each component, and each rule delta with its rule and event."""
    container = web_state(request).container
    contact_id = resolve_contact_id(request, ref)
    with container.db.read() as conn:
        result = explain(conn, contact_id, automation(request), container.clock.now())
    if result is None:
        raise NotFound(f"no contact {ref}")
    return result


@router.get("/tasks", response_model=TaskPage, tags=["tasks"])
def list_tasks(
    request: Request,
    status: str | None = Query(None, pattern="^(open|done|cancelled)$"),
    contact: str | None = Query(None, description="Contact id or e-mail"),
    after: int | None = Query(None, description="Cursor: the last id of the previous page"),
    limit: int = Query(50, ge=1, le=500),
) -> dict[str, Any]:
    contact_id = resolve_contact_id(request, contact) if contact is not None else None
    with web_state(request).container.db.read() as conn:
        rows = task_store.search(
            conn, status=status, contact_id=contact_id, after_id=after, limit=limit
        )
    return {"items": rows, "next_after": rows[-1]["id"] if len(rows) == limit else None}
