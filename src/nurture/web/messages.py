"""Admin API for delivery: messages, suppressions, the explicit re-subscribe, and re-enabling an
outbound endpoint (``/api/v1/messages``, ``/api/v1/suppressions``, ...)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel

from nurture.contacts import suppression
from nurture.errors import NotFound
from nurture.integrations import endpoint_state
from nurture.pack import load_pack
from nurture.storage import messages as message_store
from nurture.storage import suppressions as suppression_store
from nurture.web.admin import resolve_contact_id
from nurture.web.auth import require_api_key
from nurture.web.state import web_state

router = APIRouter(prefix="/api/v1", dependencies=[Depends(require_api_key)], tags=["delivery"])

MESSAGE_STATUSES = "^(sending|sent|retrying|failed|suppressed|skipped)$"
REASONS = "^(" + "|".join(sorted(suppression.REASONS)) + ")$"


class MessageOut(BaseModel):
    id: int
    key: str
    channel: str
    provider: str
    status: str
    contact_id: int | None = None
    to_address: str | None = None
    template: str | None = None
    subject: str | None = None
    transactional: bool
    rule_id: str | None = None
    event_id: int | None = None
    enrollment_id: int | None = None
    step_id: str | None = None
    provider_message_id: str | None = None
    attempts: int
    settled: str | None = None
    error: str | None = None
    created_at: datetime
    updated_at: datetime
    sent_at: datetime | None = None
    delivered_at: datetime | None = None
    opened_at: datetime | None = None
    clicked_at: datetime | None = None
    bounced_at: datetime | None = None
    complained_at: datetime | None = None
    unsubscribed_at: datetime | None = None


class MessagePage(BaseModel):
    items: list[MessageOut]
    next_before: int | None = None


class SuppressionOut(BaseModel):
    id: int
    contact_id: int | None = None
    # SHA-256 of the normalised address: an erased contact stays suppressed without it.
    email_hash: str | None = None
    reason: str
    created_at: datetime
    event_id: int | None = None


class SuppressionPage(BaseModel):
    items: list[SuppressionOut]
    next_after: int | None = None


class Resubscribed(BaseModel):
    contact_id: int
    status: str
    previous_status: str
    lifted: list[str]
    by: str


class EndpointEnabled(BaseModel):
    name: str
    enabled: bool
    was_disabled: bool


@router.get("/messages", response_model=MessagePage)
def list_messages(
    request: Request,
    contact: str | None = Query(None, description="Contact id or e-mail address"),
    status: str | None = Query(None, pattern=MESSAGE_STATUSES),
    before: int | None = Query(None, description="Cursor: the last id of the previous page"),
    limit: int = Query(50, ge=1, le=500),
) -> dict[str, Any]:
    contact_id = resolve_contact_id(request, contact) if contact else None
    with web_state(request).container.db.read() as conn:
        rows = message_store.search(
            conn, contact_id=contact_id, status=status, before_id=before, limit=limit
        )
    return {"items": rows, "next_before": rows[-1]["id"] if len(rows) == limit else None}


@router.get("/messages/{message_id}", response_model=MessageOut)
def get_message(request: Request, message_id: int) -> dict[str, Any]:
    with web_state(request).container.db.read() as conn:
        row = message_store.get(conn, message_id)
    if row is None:
        raise NotFound(f"no message {message_id}")
    return row


@router.get("/suppressions", response_model=SuppressionPage)
def list_suppressions(
    request: Request,
    contact: str | None = Query(None, description="Contact id or e-mail address"),
    reason: str | None = Query(None, pattern=REASONS),
    after: int | None = Query(None, description="Cursor: the last id of the previous page"),
    limit: int = Query(100, ge=1, le=1000),
) -> dict[str, Any]:
    contact_id = resolve_contact_id(request, contact) if contact else None
    with web_state(request).container.db.read() as conn:
        rows = suppression_store.list_all(
            conn, contact_id=contact_id, reason=reason, after_id=after, limit=limit
        )
    return {"items": rows, "next_after": rows[-1]["id"] if len(rows) == limit else None}


@router.post("/contacts/{ref}/resubscribe", response_model=Resubscribed, tags=["contacts"])
def resubscribe(
    request: Request, ref: str, key_name: str = Depends(require_api_key)
) -> dict[str, Any]:
    """The person asked to receive marketing mail again: lift every suppression of the contact
    and its address (a hard bounce too: only do this when the address works again), status back
    to ``subscribed``, noted on the timeline with the API key's name."""
    c = web_state(request).container
    contact_id = resolve_contact_id(request, ref)
    with c.db.begin() as conn:
        result = suppression.resubscribe(conn, contact_id, c.clock.now(), by=f"api:{key_name}")
    if result is None:
        raise NotFound(f"no contact {ref!r}")
    return result


@router.post("/endpoints/{name}/enable", response_model=EndpointEnabled, tags=["endpoints"])
def enable_endpoint(request: Request, name: str) -> dict[str, Any]:
    """Enable an outbound endpoint a ``410 Gone`` disabled. Deliveries that died meanwhile stay
    dead; retry them through ``/api/v1/jobs/{id}/retry``."""
    c = web_state(request).container
    pack = load_pack(c.settings.automation_dir)
    was_disabled = endpoint_state.reenable(c.db, pack, name, c.clock.now())
    return {"name": name, "enabled": True, "was_disabled": was_disabled}
