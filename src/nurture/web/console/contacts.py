"""``/console/contacts``: search (e-mail, name, tag, segment, score range; keyset pages) and
one contact's page: attributes, tags, segments, the lead score explained, RFM and
recommendations, enrollments with every step in the contact's time zone, messages, tasks and
the timeline with causes. Admins add or remove a tag, exit a sequence, unsubscribe, and erase
the contact's personal data (after a confirmation step, through ``contacts.erasure``)."""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from fastapi import APIRouter, Depends, Request
from starlette.responses import RedirectResponse, Response

from nurture.accounts.sessions import Session
from nurture.automation.step import explain
from nurture.commerce import purchases, recommendations
from nurture.contacts import erasure, manual
from nurture.errors import InvalidFields, NotFound
from nurture.pack import load_pack
from nurture.sequences import exit_enrollment
from nurture.storage import audit
from nurture.storage import contacts as store
from nurture.storage import enrollments as enrollment_store
from nurture.storage import messages as message_store
from nurture.storage import tasks as task_store
from nurture.storage import timeline as timeline_store
from nurture.web.commerce import _models
from nurture.web.console.render import render
from nurture.web.console.security import admin, client_addr, viewer
from nurture.web.rules import automation
from nurture.web.sequences import _service as sequence_service
from nurture.web.state import web_state

router = APIRouter(prefix="/console", include_in_schema=False)
NAV = ("Contacts", "/console/contacts")

PAGE = 50
# Ids looked at per page when only tags or segments (JSON, no index) narrow the search.
WINDOW = 20_000
TIMELINE = 100
DONE = {
    "tag_added": "The tag is added.",
    "tag_removed": "The tag is removed.",
    "tag_present": "The contact already has that tag.",
    "tag_absent": "The contact did not have that tag.",
    "unsubscribed": "The contact is unsubscribed: no more marketing mail.",
    "already_unsubscribed": "The contact was already unsubscribed.",
    "exited": "The contact left the sequence; its pending steps are cancelled.",
    "already_ended": "That enrollment had already ended.",
}


def parse_id(raw: str, what: str = "contact") -> int:
    if not raw.isdigit() or len(raw) > 18:
        raise NotFound(f"no {what} {raw[:40]!r}")
    return int(raw)


def _int_field(raw: str, name: str, errors: dict[str, str]) -> int | None:
    raw = raw.strip()
    if not raw:
        return None
    try:
        value = int(raw)
    except ValueError:
        errors[name] = "a whole number, e.g. 40"
        return None
    if abs(value) > 1_000_000:
        errors[name] = "between -1000000 and 1000000"
        return None
    return value


def _segment_options(request: Request) -> list[tuple[str, str]]:
    return [(s.id, v.value) for s in automation(request).segmentations for v in s.spec.values]


@router.get("/contacts")
def contacts_page(
    request: Request,
    q: str = "",
    tag: str = "",
    segment: str = "",
    score_min: str = "",
    score_max: str = "",
    before: str = "",
    erased: str = "",
    session: Session = Depends(viewer),
) -> Response:
    container = web_state(request).container
    errors: dict[str, str] = {}
    q, tag = q.strip(), tag.strip()
    if len(q) > 320:
        errors["q"] = "at most 320 characters"
    if len(tag) > manual.MAX_TAG:
        errors["tag"] = f"at most {manual.MAX_TAG} characters"
    options = _segment_options(request)
    chosen: tuple[str, str] | None = None
    if segment:
        name, _, value = segment.partition("=")
        if (name, value) in options:
            chosen = (name, value)
        else:
            errors["segment"] = "pick one of the listed segments"
    low = _int_field(score_min, "score_min", errors)
    high = _int_field(score_max, "score_max", errors)
    if low is not None and high is not None and low > high:
        errors["score_max"] = "must not be below the minimum"
    before_id = int(before) if before.isdigit() and len(before) < 19 else None
    rows: list[dict[str, Any]] = []
    scanned: tuple[int, int] | None = None
    next_before: int | None = None
    erasure_entry = None
    with container.db.read() as conn:
        if erased.isdigit() and len(erased) < 19:
            found = audit.recent(conn, target_kind="contact", target_id=erased, limit=5)
            erasure_entry = next((e for e in found if e["action"] == "contact.erase"), None)
        if not errors:
            window = WINDOW if (tag or chosen) and not q else None
            if window is not None and before_id is None:
                before_id = store.max_id(conn) + 1
            rows = store.browse(
                conn,
                text=q or None,
                tag=tag or None,
                segment=chosen,
                score_min=low,
                score_max=high,
                before_id=before_id,
                window=window,
                limit=PAGE,
            )
            if len(rows) == PAGE:
                next_before = rows[-1]["id"]
            elif window is not None and before_id is not None and before_id - window > 1:
                scanned = (max(1, before_id - window), before_id - 1)
                next_before = before_id - window
            elif window is not None and before_id is not None:
                scanned = (1, before_id - 1)
    query = {
        "q": q,
        "tag": tag,
        "segment": segment,
        "score_min": score_min.strip(),
        "score_max": score_max.strip(),
    }
    return render(
        request,
        session,
        "contacts.html",
        title="Contacts",
        status=422 if errors else 200,
        rows=rows,
        errors=errors,
        query=query,
        segment_options=options,
        next_before=next_before,
        scanned=scanned,
        erasure=erasure_entry,
        erased_id=erased,
    )


def _zone(name: str | None) -> ZoneInfo | None:
    if not name:
        return None
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return None


def _local(value: datetime | None, zone: ZoneInfo | None) -> str:
    """A time in the contact's zone, e.g. ``2026-12-07 09:00 CET`` (UTC without one)."""
    if value is None:
        return "-"
    if zone is None:
        return value.strftime("%Y-%m-%d %H:%M UTC")
    return value.astimezone(zone).strftime("%Y-%m-%d %H:%M %Z")


def _commerce_config(request: Request) -> purchases.CommerceConfig:
    state = request.app.state
    config: purchases.CommerceConfig | None = getattr(state, "console_commerce_config", None)
    if config is None:
        settings = web_state(request).container.settings
        config = purchases.load_config(load_pack(settings.automation_dir))
        state.console_commerce_config = config
    return config


def contact_view(
    request: Request,
    session: Session,
    contact_id: int,
    *,
    before: int | None = None,
    errors: dict[str, str] | None = None,
    done: str = "",
    tag_value: str = "",
) -> Response:
    container = web_state(request).container
    now = container.clock.now()
    with container.db.read() as conn:
        contact = store.get_row(conn, contact_id)
        if contact is None:
            raise NotFound(f"no contact {contact_id} (it may have been erased)")
        score = explain(conn, contact_id, automation(request), now)
        enrolled = enrollment_store.for_contact(conn, contact_id)
        steps = enrollment_store.steps(conn, [e["id"] for e in enrolled])
        sent = message_store.for_contact(conn, contact_id, limit=50)
        tasks = task_store.search(conn, contact_id=contact_id, limit=50)
        timeline = timeline_store.for_contact(conn, contact_id, before_id=before, limit=TIMELINE)
        changes = audit.recent(conn, target_kind="contact", target_id=str(contact_id), limit=20)
    recommended = recommendations.for_contact(
        container.db, contact_id, now, _commerce_config(request), cache=_models(request)
    )
    zone = _zone(contact.get("time_zone"))
    return render(
        request,
        session,
        "contact.html",
        title=contact.get("email") or f"Contact {contact_id}",
        status=422 if errors else 200,
        c=contact,
        score=score,
        enrollments=[{**e, "steps": steps.get(e["id"], [])} for e in enrolled],
        messages=sent,
        tasks=tasks,
        timeline=timeline,
        next_before=timeline[-1]["id"] if len(timeline) == TIMELINE else None,
        changes=changes,
        recommended=recommended,
        zone_name=contact.get("time_zone") if zone else None,
        local=lambda v: _local(v, zone),
        errors=errors or {},
        done_message=DONE.get(done),
        tag_value=tag_value,
        now=now,
    )


@router.get("/contacts/{contact_id}")
def contact_page(
    request: Request,
    contact_id: str,
    before: str = "",
    done: str = "",
    session: Session = Depends(viewer),
) -> Response:
    before_id = int(before) if before.isdigit() and len(before) < 19 else None
    return contact_view(request, session, parse_id(contact_id), before=before_id, done=done)


def _who(request: Request, session: Session) -> manual.Who:
    return manual.Who(session.actor, client_addr(request))


def _back(contact_id: int, done: str) -> Response:
    return RedirectResponse(f"/console/contacts/{contact_id}?done={done}", status_code=303)


@router.post("/contacts/{contact_id}/tags")
async def add_tag(request: Request, contact_id: str, session: Session = Depends(admin)) -> Response:
    number = parse_id(contact_id)
    raw = (await request.form()).get("tag")
    now = web_state(request).container.clock.now()
    db = web_state(request).container.db
    try:
        added = await asyncio.to_thread(
            manual.add_tag, db, number, raw, now=now, who=_who(request, session)
        )
    except InvalidFields as exc:
        errors = {p.field: p.message for p in exc.problems}
        typed = raw if isinstance(raw, str) else ""
        return await asyncio.to_thread(
            contact_view, request, session, number, errors=errors, tag_value=typed[:200]
        )
    return _back(number, "tag_added" if added else "tag_present")


@router.post("/contacts/{contact_id}/tags/remove")
async def remove_tag(
    request: Request, contact_id: str, session: Session = Depends(admin)
) -> Response:
    number = parse_id(contact_id)
    raw = (await request.form()).get("tag")
    state = web_state(request)
    removed = await asyncio.to_thread(
        manual.remove_tag,
        state.container.db,
        number,
        raw,
        now=state.container.clock.now(),
        who=_who(request, session),
    )
    return _back(number, "tag_removed" if removed else "tag_absent")


@router.post("/contacts/{contact_id}/unsubscribe")
async def unsubscribe(
    request: Request, contact_id: str, session: Session = Depends(admin)
) -> Response:
    number = parse_id(contact_id)
    state = web_state(request)
    done = await asyncio.to_thread(
        manual.unsubscribe,
        state.container.db,
        number,
        now=state.container.clock.now(),
        who=_who(request, session),
    )
    return _back(number, "unsubscribed" if done else "already_unsubscribed")


@router.post("/contacts/{contact_id}/enrollments/{enrollment_id}/exit")
async def exit_sequence(
    request: Request, contact_id: str, enrollment_id: str, session: Session = Depends(admin)
) -> Response:
    number = parse_id(contact_id)
    enrollment = parse_id(enrollment_id, "enrollment")
    container = web_state(request).container
    ended, _ = await asyncio.to_thread(
        exit_enrollment,
        container.db,
        sequence_service(request),
        enrollment,
        f"console {session.actor}",
        now=container.clock.now(),
        partitions=container.settings.partitions,
        contact_id=number,
        actor=session.actor,
        client_addr=client_addr(request),
    )
    return _back(number, "exited" if ended else "already_ended")


def _erase_view(
    request: Request, session: Session, contact_id: int, error: str | None = None
) -> Response:
    container = web_state(request).container
    with container.db.read() as conn:
        contact = store.get_row(conn, contact_id)
    if contact is None:
        raise NotFound(f"no contact {contact_id} (it may have been erased)")
    return render(
        request,
        session,
        "contact_erase.html",
        title=f"Erase contact {contact_id}",
        status=422 if error else 200,
        c=contact,
        expected=contact.get("email") or str(contact_id),
        error=error,
    )


@router.get("/contacts/{contact_id}/erase")
def erase_page(request: Request, contact_id: str, session: Session = Depends(viewer)) -> Response:
    return _erase_view(request, session, parse_id(contact_id))


@router.post("/contacts/{contact_id}/erase")
async def erase(request: Request, contact_id: str, session: Session = Depends(admin)) -> Response:
    number = parse_id(contact_id)
    typed = (await request.form()).get("confirm")
    container = web_state(request).container

    def run() -> Response | None:
        with container.db.read() as conn:
            contact = store.get_row(conn, number)
        if contact is None:
            raise NotFound(f"no contact {number} (it may have been erased)")
        expected = contact.get("email") or str(number)
        if not isinstance(typed, str) or typed.strip().lower() != expected.lower():
            message = f"type {expected} exactly to confirm" if typed else "type it to confirm"
            return _erase_view(request, session, number, message)
        erasure.erase_contact(
            container.db,
            number,
            actor=session.actor,
            now=container.clock.now(),
            client_addr=client_addr(request),
        )
        return None

    refused = await asyncio.to_thread(run)
    if refused is not None:
        return refused
    return RedirectResponse(f"/console/contacts?erased={number}", status_code=303)
