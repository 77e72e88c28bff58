"""Double opt-in pages: ``GET /confirm/{token}`` asks, ``POST /confirm/{token}`` confirms.

GET never confirms, for the same reason as the unsubscribe page: mail scanners and link
previews fetch every URL of a message, and a prefetch must not stand for the person's consent.
The confirmation is written at once (the contact may be mailed from now on); the
``consent.confirmed`` event goes through the inbox so rules and sequences start from it.
"""

from __future__ import annotations

import asyncio
import html

from fastapi import APIRouter, Request
from starlette.responses import HTMLResponse

from nurture.contacts import consent
from nurture.core.events import ContactRef, InboundEvent
from nurture.errors import Unauthenticated
from nurture.messaging.unsubscribe import read_token, signing_key
from nurture.storage import contacts as contact_store
from nurture.web.state import WebState, web_state
from nurture.web.unsubscribe import page

router = APIRouter(include_in_schema=False)

INVALID = (
    "This confirmation link is not valid",
    "<p>The link may have been cut by your mail program. Please use the link from the "
    "e-mail again, or sign up once more.</p>",
)
DONE = ("Thank you", "<p>Your subscription is confirmed.</p>")


def _consent_id(state: WebState, token: str) -> int | None:
    try:
        return read_token(signing_key(state.container.settings), token, "confirm")
    except Unauthenticated:
        return None


@router.get("/confirm/{token}")
async def confirm_page(token: str, request: Request) -> HTMLResponse:
    if _consent_id(web_state(request), token) is None:
        return page(*INVALID, status=400)
    action = html.escape(str(request.url.path), quote=True)
    return page(
        "Confirm your subscription",
        "<p>Please confirm that you want to receive our e-mails.</p>"
        f'<form method="post" action="{action}"><button type="submit">Confirm</button></form>',
    )


@router.post("/confirm/{token}")
async def confirm(token: str, request: Request) -> HTMLResponse:
    state = web_state(request)
    consent_id = _consent_id(state, token)
    if consent_id is None:
        return page(*INVALID, status=400)
    client = request.client.host if request.client else None
    email = await asyncio.to_thread(_confirm, state, consent_id, client)
    if email is not None:
        event = InboundEvent(
            source="confirm",
            type=consent.CONFIRMED,
            dedupe_key=f"consent:{consent_id}",
            contact=ContactRef(email=email),
            data={"consent_id": consent_id},
            occurred_at=state.container.clock.now(),
        )
        await state.ingestor.submit([event], None, None)
    return page(*DONE)


def _confirm(state: WebState, consent_id: int, client: str | None) -> str | None:
    """Confirm at once; the address for the event, or ``None`` when there was nothing to do."""
    container = state.container
    with container.db.begin() as conn:
        contact_id = consent.confirm(conn, consent_id, container.clock.now(), client)
        contact = contact_store.load(conn, contact_id) if contact_id is not None else None
        return contact.email if contact is not None else None
