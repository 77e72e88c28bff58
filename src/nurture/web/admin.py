"""Admin API, ``/api/v1``: contacts and events. Feature routers add their own modules."""

from __future__ import annotations

import base64
from typing import Any

from fastapi import APIRouter, Depends, Query, Request

from nurture.contacts import erasure
from nurture.core.events import normalise_email
from nurture.errors import NotFound
from nurture.intake import replay
from nurture.storage import contacts as contact_store
from nurture.storage import events as event_store
from nurture.storage import timeline as timeline_store
from nurture.web.audit import client_addr, mark_audited
from nurture.web.auth import require_api_key
from nurture.web.models import (
    Accepted,
    ContactOut,
    ContactPage,
    Erased,
    EventDetail,
    EventPage,
    EventSummary,
    TimelineEntry,
    TimelineOut,
)
from nurture.web.state import web_state

router = APIRouter(prefix="/api/v1", dependencies=[Depends(require_api_key)])


def resolve_contact_id(request: Request, ref: str) -> int:
    """``ref`` is a numeric id or an e-mail address."""
    db = web_state(request).container.db
    if ref.isdigit():
        return int(ref)
    email = normalise_email(ref)
    if email is None:
        raise NotFound(f"no contact {ref!r}")
    with db.read() as conn:
        cid = contact_store.id_by_email(conn, email)
    if cid is None:
        raise NotFound(f"no contact with e-mail {email}")
    return cid


def contact_payload(request: Request, contact_id: int) -> dict[str, Any]:
    with web_state(request).container.db.read() as conn:
        row = contact_store.get_row(conn, contact_id)
    if row is None:
        raise NotFound(f"no contact {contact_id}")
    return row


@router.get("/contacts", response_model=ContactPage, tags=["contacts"])
def list_contacts(
    request: Request,
    query: str | None = Query(None, description="Matches e-mail, names, tags and identities"),
    after: int | None = Query(None, description="Cursor: the last id of the previous page"),
    limit: int = Query(50, ge=1, le=500),
) -> dict[str, Any]:
    with web_state(request).container.db.read() as conn:
        rows = contact_store.search(conn, query, after_id=after, limit=limit)
        for row in rows:
            row["identities"] = {}
    return {"items": rows, "next_after": rows[-1]["id"] if len(rows) == limit else None}


@router.get("/contacts/{ref}", response_model=ContactOut, tags=["contacts"])
def get_contact(request: Request, ref: str) -> dict[str, Any]:
    return contact_payload(request, resolve_contact_id(request, ref))


@router.get("/contacts/{ref}/export", tags=["contacts"])
def export_contact(
    request: Request, ref: str, key_name: str = Depends(require_api_key)
) -> dict[str, Any]:
    """Everything held about the contact, as JSON (GDPR access and portability); audited."""
    c = web_state(request).container
    return erasure.export_contact(
        c.db,
        resolve_contact_id(request, ref),
        actor=f"key:{key_name}",
        now=c.clock.now(),
        client_addr=client_addr(request),
    )


@router.delete("/contacts/{ref}", response_model=Erased, tags=["contacts"])
def erase_contact(
    request: Request, ref: str, key_name: str = Depends(require_api_key)
) -> dict[str, Any]:
    """Erase the contact's personal data (GDPR): the contact, identities, timeline, tasks and
    orders are deleted, event payloads and messages blanked, pending jobs cancelled; only a
    hashed suppression of the address remains so that it is never mailed again. Audited."""
    c = web_state(request).container
    report = erasure.erase_contact(
        c.db,
        resolve_contact_id(request, ref),
        actor=f"key:{key_name}",
        now=c.clock.now(),
        client_addr=client_addr(request),
    )
    mark_audited(request)
    return report.as_dict()


@router.get("/contacts/{ref}/timeline", response_model=TimelineOut, tags=["contacts"])
def get_timeline(
    request: Request,
    ref: str,
    before: int | None = Query(None),
    limit: int = Query(100, ge=1, le=1000),
) -> dict[str, Any]:
    cid = resolve_contact_id(request, ref)
    contact_payload(request, cid)
    with web_state(request).container.db.read() as conn:
        items = timeline_store.for_contact(conn, cid, before_id=before, limit=limit)
    return {
        "contact_id": cid,
        "items": [TimelineEntry(**i) for i in items],
        "next_before": items[-1]["id"] if len(items) == limit else None,
    }


@router.get("/events", response_model=EventPage, tags=["events"])
def list_events(
    request: Request,
    status: str | None = Query(None, pattern="^(pending|processed|failed)$"),
    type: str | None = Query(None),
    before: int | None = Query(None),
    limit: int = Query(50, ge=1, le=500),
) -> dict[str, Any]:
    with web_state(request).container.db.read() as conn:
        rows = event_store.search(conn, status=status, type_=type, before_id=before, limit=limit)
    return {
        "items": [EventSummary(**r) for r in rows],
        "next_before": rows[-1]["id"] if len(rows) == limit else None,
    }


@router.get("/events/{event_id}", response_model=EventDetail, tags=["events"])
def get_event(request: Request, event_id: int) -> dict[str, Any]:
    with web_state(request).container.db.read() as conn:
        row = event_store.get(conn, event_id)
    if row is None:
        raise NotFound(f"no event {event_id}")
    raw = row.pop("raw")
    row["raw"], row["raw_encoding"] = None, None
    if raw is not None:
        try:
            row["raw"], row["raw_encoding"] = bytes(raw).decode("utf-8"), "utf-8"
        except UnicodeDecodeError:
            row["raw"], row["raw_encoding"] = base64.b64encode(raw).decode(), "base64"
    return row


@router.post("/events/{event_id}/replay", response_model=Accepted, status_code=202, tags=["events"])
def replay_event(request: Request, event_id: int) -> dict[str, Any]:
    container = web_state(request).container
    replay.replay_event(container.db, event_id, container.clock.now())
    return {"status": "requeued", "event_ids": [event_id]}
