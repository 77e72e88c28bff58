"""Unsubscribe pages: ``GET /u/{token}`` asks, ``POST /u/{token}`` unsubscribes (RFC 8058).

GET never unsubscribes: mail scanners and link previews fetch every URL in a message. POST is
both the page's button and the mail client's one-click request
(``List-Unsubscribe=One-Click``). The suppression row is written at once, so no marketing mail
leaves after the click even if the worker is behind; the ``email.unsubscribed`` event goes
through the inbox like any other, so rules and sequences react (exit on unsubscribe).
"""

from __future__ import annotations

import asyncio
import html

from fastapi import APIRouter, Request
from starlette.responses import HTMLResponse

from nurture.contacts import suppression
from nurture.core.events import ContactRef, InboundEvent
from nurture.errors import Unauthenticated
from nurture.messaging.unsubscribe import read_token, signing_key
from nurture.storage import contacts as contact_store
from nurture.web.body import read_limited
from nurture.web.state import WebState, client_addr, web_state

router = APIRouter(include_in_schema=False)

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="robots" content="noindex">
<title>{title}</title>
<style>body{{font-family:system-ui,sans-serif;max-width:32rem;margin:4rem auto;padding:0 1rem;
color:#222}}button{{font-size:1rem;padding:.6rem 1.2rem;border-radius:.4rem;border:1px solid #555;
background:#fff;cursor:pointer}}</style></head>
<body><h1>{title}</h1>{body}</body></html>"""


def page(title: str, body: str, status: int = 200) -> HTMLResponse:
    return HTMLResponse(PAGE.format(title=html.escape(title), body=body), status_code=status)


def _contact_id(state: WebState, token: str) -> int | None:
    try:
        return read_token(signing_key(state.container.settings), token)
    except Unauthenticated:
        return None


INVALID = (
    "This unsubscribe link is not valid",
    "<p>The link may have been cut by your mail program. Please use the link from the "
    "e-mail again, or reply to it and ask to be removed.</p>",
)


@router.get("/u/{token}")
async def confirm_page(token: str, request: Request) -> HTMLResponse:
    state = web_state(request)
    if _contact_id(state, token) is None:
        return page(*INVALID, status=400)
    action = html.escape(str(request.url.path), quote=True)
    return page(
        "Unsubscribe",
        "<p>Do you want to stop receiving our marketing e-mails?</p>"
        f'<form method="post" action="{action}"><input type="hidden" name="confirm" value="1">'
        '<button type="submit">Unsubscribe</button></form>',
    )


@router.post("/u/{token}")
async def unsubscribe(token: str, request: Request) -> HTMLResponse:
    state = web_state(request)
    contact_id = _contact_id(state, token)
    if contact_id is None:
        return page(*INVALID, status=400)
    body = await read_limited(request, 4096)
    method = "one-click" if b"List-Unsubscribe=One-Click" in body else "page"
    email = await asyncio.to_thread(_suppress, state, contact_id)
    if email is not None:
        now = state.container.clock.now()
        event = InboundEvent(
            source="unsubscribe",
            type="email.unsubscribed",
            # Repeated clicks (and mail clients that POST twice) within the hour are one event.
            dedupe_key=f"{contact_id}:{int(now.timestamp()) // 3600}",
            contact=ContactRef(email=email),
            data={"method": method, "contact_id": contact_id},
            occurred_at=now,
        )
        await state.ingestor.submit([event], None, None, client_addr(request))
    return page(
        "You are unsubscribed", "<p>You will not receive marketing e-mails from us any more.</p>"
    )


def _suppress(state: WebState, contact_id: int) -> str | None:
    """Suppress at once; the address for the event, or ``None`` for an erased contact."""
    container = state.container
    with container.db.begin() as conn:
        contact = contact_store.load(conn, contact_id)
        if contact is None or not contact.email:
            return None
        suppression.suppress(conn, contact, "unsubscribed", container.clock.now())
        return contact.email
