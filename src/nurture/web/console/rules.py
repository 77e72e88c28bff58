"""``/console/rules``: each rule as written (trigger, condition, actions), how often it fired
in the last 24 hours and 7 days and when last (its ``rule.fired`` timeline notes), and a dry
run: paste an event, pick a contact, see the decisions (``rules.dryrun`` as the worker runs
it, the same as ``POST /api/v1/rules/dry-run``). A dry run changes nothing, so a viewer may
run one; the form still carries the CSRF token."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from typing import Any

import yaml
from fastapi import APIRouter, Depends, Request
from starlette.responses import Response

from nurture.accounts.sessions import Session
from nurture.core.contacts import ContactState
from nurture.core.events import normalise_email
from nurture.errors import FieldProblem, InvalidFields
from nurture.integrations.outbound import dry_run_as_run
from nurture.rules.dryrun import contact_from_json, event_from_text
from nurture.storage import contacts as contact_store
from nurture.storage import rule_fires
from nurture.storage import timeline as timeline_store
from nurture.web.console.render import render
from nurture.web.console.security import check_csrf, viewer
from nurture.web.console.snapshot import Snapshot
from nurture.web.rules import automation
from nurture.web.state import web_state

router = APIRouter(prefix="/console", include_in_schema=False)
NAV = ("Rules", "/console/rules")

MAX_EVENT = 20_000
COUNTS_MAX_AGE = 60.0
FIRST_WAIT = 1.0
EXAMPLE = '{"type": "email.clicked", "data": {"url": "https://example.com/offer"}}'


def _yaml(value: Any) -> str:
    return yaml.safe_dump(value, sort_keys=False, allow_unicode=True, width=90).strip()


def _fire_counts(request: Request) -> Snapshot[dict[str, list[int]]]:
    """Counting a week of fires reads every one of them: done in the background at most every
    ``COUNTS_MAX_AGE`` (one snapshot per app), like the Jobs page's counts."""
    state = web_state(request)
    found = state.sources.get("__console_rule_fires__")
    if found is None:
        db, clock = state.container.db, state.container.clock
        ids = [r.id for r in automation(request).rules]

        def compute() -> dict[str, list[int]]:
            now = clock.now()
            with db.read() as conn:
                return timeline_store.rule_fire_counts(
                    conn, ids, [now - timedelta(hours=24), now - timedelta(days=7)]
                )

        found = Snapshot(compute, COUNTS_MAX_AGE, clock.now)
        state.sources["__console_rule_fires__"] = found
    assert isinstance(found, Snapshot)
    return found


def _rules(request: Request) -> tuple[list[dict[str, Any]], datetime | None]:
    auto = automation(request)
    ordered = auto.ordered_rules
    ids = [r.id for r in ordered]
    snapshot = _fire_counts(request)
    counts, counted_at = snapshot.get()
    if counts is None:
        snapshot.wait(FIRST_WAIT)
        counts, counted_at = snapshot.get()
    with web_state(request).container.db.read() as conn:
        last = timeline_store.rule_last_fired(conn, ids)
    out = []
    for rule in ordered:
        spec = rule.spec.export()
        out.append(
            {
                "id": rule.id,
                "description": rule.spec.description,
                "enabled": rule.spec.enabled,
                "priority": rule.spec.priority,
                "on": rule.spec.on,
                "cron": rule.spec.cron,
                "if": rule.spec.if_,
                "once": rule.spec.once,
                "stop": rule.spec.stop,
                "do": _yaml(spec["do"]),
                "day": counts.get(rule.id, [0, 0])[0] if counts is not None else None,
                "week": counts.get(rule.id, [0, 0])[1] if counts is not None else None,
                "last": last.get(rule.id),
            }
        )
    return out, counted_at


def _page(
    request: Request,
    session: Session,
    *,
    event_text: str = EXAMPLE,
    contact_text: str = "",
    errors: dict[str, str] | None = None,
    result: dict[str, Any] | None = None,
) -> Response:
    now = web_state(request).container.clock.now()
    rules, counted_at = _rules(request)
    return render(
        request,
        session,
        "rules.html",
        title="Rules",
        status=422 if errors else 200,
        rules=rules,
        counted_at=counted_at,
        now=now,
        event_text=event_text,
        contact_text=contact_text,
        errors=errors or {},
        result=result,
    )


@router.get("/rules")
def rules_page(request: Request, session: Session = Depends(viewer)) -> Response:
    return _page(request, session)


def _contact(request: Request, raw: str) -> tuple[ContactState, dict[str, datetime]]:
    """The stored contact named by id or e-mail (with its rules' last fires), or a new one."""
    if not raw:
        return contact_from_json(None), {}
    db = web_state(request).container.db
    with db.read() as conn:
        contact = None
        if raw.isdigit() and len(raw) < 19:
            contact = contact_store.load(conn, int(raw))
        else:
            email = normalise_email(raw)
            if email is not None:
                contact = contact_store.load_by_email(conn, email)
        if contact is None:
            raise InvalidFields([FieldProblem("contact", f"no contact {raw[:80]!r}")])
        history = rule_fires.last_fired(conn, contact.id, [r.id for r in automation(request).rules])
    return contact, history


def _dry_run(request: Request, event_text: str, contact_text: str) -> dict[str, Any]:
    container = web_state(request).container
    now = container.clock.now()
    event = event_from_text(event_text, now, limit=MAX_EVENT)
    contact, history = _contact(request, contact_text)
    return dry_run_as_run(container.settings, automation(request), event, contact, now, history)


@router.post("/rules/dry-run")
async def dry_run(request: Request, session: Session = Depends(viewer)) -> Response:
    form = await request.form()
    check_csrf(request, session.csrf_token, form.get("csrf"))
    event_text = str(form.get("event") or "").strip()
    contact_text = str(form.get("contact") or "").strip()

    def run() -> Response:
        try:
            result = _dry_run(request, event_text, contact_text)
        except InvalidFields as exc:
            errors = {p.field: p.message for p in exc.problems}
            return _page(
                request,
                session,
                event_text=event_text[:MAX_EVENT],
                contact_text=contact_text[:320],
                errors=errors,
            )
        return _page(
            request,
            session,
            event_text=event_text,
            contact_text=contact_text,
            result=result,
        )

    return await asyncio.to_thread(run)
