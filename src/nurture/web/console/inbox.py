"""``/console/inbox``: recent webhook requests per source (accepted, duplicate, rejected with
the reason), what was sent with secrets masked, and a replay for an event whose processing
failed (``intake.replay``)."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Depends, Request
from starlette.responses import RedirectResponse, Response

from nurture.accounts.sessions import Session
from nurture.core import redact
from nurture.errors import NotFound
from nurture.intake import replay
from nurture.storage import events as event_store
from nurture.storage import inbox as store
from nurture.web.console.overview import REASON_LABELS
from nurture.web.console.render import render
from nurture.web.console.security import admin, client_addr, viewer
from nurture.web.state import web_state

router = APIRouter(prefix="/console", include_in_schema=False)
NAV = ("Inbox", "/console/inbox")

OUTCOMES = ("accepted", "duplicate", "rejected")
PAGE = 50
# Events shown on one request's page (a batch may hold up to NURTURE_MAX_BATCH_EVENTS).
MAX_EVENTS = 20


def _number(raw: str, what: str) -> int:
    if not raw.isdigit() or len(raw) > 18:
        raise NotFound(f"no {what} {raw[:40]!r}")
    return int(raw)


@router.get("/inbox")
def inbox_page(
    request: Request,
    source: str = "",
    outcome: str = "",
    before: str = "",
    session: Session = Depends(viewer),
) -> Response:
    container = web_state(request).container
    outcome = outcome if outcome in OUTCOMES else ""
    before_id = int(before) if before.isdigit() and len(before) < 19 else None
    with container.db.read() as conn:
        rows = store.recent(
            conn,
            source=source or None,
            outcome=outcome or None,
            before_id=before_id,
            limit=PAGE,
        )
        sources = store.sources(conn)
    return render(
        request,
        session,
        "inbox.html",
        title="Inbox",
        rows=rows,
        sources=sources,
        source=source,
        outcome=outcome,
        outcomes=OUTCOMES,
        reason_labels=REASON_LABELS,
        next_before=rows[-1]["id"] if len(rows) == PAGE else None,
        refresh=15,
    )


def _event_view(row: dict[str, Any]) -> dict[str, Any]:
    raw = row.get("raw")
    return {
        "id": row["id"],
        "type": row["type"],
        "source": row["source"],
        "status": row["status"],
        "attempts": row["attempts"],
        "error": row["error"],
        "contact_id": row["contact_id"],
        "received_at": row["received_at"],
        "processed_at": row["processed_at"],
        "payload": redact.payload(bytes(raw)) if raw is not None else None,
        "canonical": redact.payload(_dumps(row["canonical"])),
    }


def _dumps(value: Any) -> bytes:
    import orjson

    return orjson.dumps(value)


@router.get("/inbox/{delivery_id}")
def delivery_page(
    request: Request, delivery_id: str, done: str = "", session: Session = Depends(viewer)
) -> Response:
    container = web_state(request).container
    number = _number(delivery_id, "request")
    with container.db.read() as conn:
        delivery = store.get(conn, number)
        if delivery is None:
            raise NotFound(f"no request {number} in the inbox (it keeps the most recent ones)")
        found = [event_store.get(conn, int(i)) for i in delivery["event_ids"][:MAX_EVENTS]]
    events = [_event_view(e) for e in found if e is not None]
    return render(
        request,
        session,
        "delivery.html",
        title=f"Request {number}",
        d=delivery,
        events=events,
        more=max(0, len(delivery["event_ids"]) - MAX_EVENTS),
        reason_labels=REASON_LABELS,
        replayed=done == "replayed",
    )


@router.post("/events/{event_id}/replay")
async def replay_event(
    request: Request, event_id: str, session: Session = Depends(admin)
) -> Response:
    container = web_state(request).container
    number = _number(event_id, "event")
    await asyncio.to_thread(
        replay.replay_event,
        container.db,
        number,
        container.clock.now(),
        actor=session.actor,
        client_addr=client_addr(request),
    )
    back = (await request.form()).get("back")
    target = (
        f"/console/inbox/{back}" if isinstance(back, str) and back.isdigit() else "/console/inbox"
    )
    return RedirectResponse(f"{target}?done=replayed", status_code=303)
