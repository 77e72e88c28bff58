"""``/console/templates``: every e-mail template, and a preview of one rendered for a chosen
contact (and optionally the event it answers), or for the template's sample data: subject,
text, and the HTML in a sandboxed iframe. Rendering is the sender's own (``TemplateStore``,
strict: a missing variable is an error, shown as such).

The HTML comes from a separate route with its own policy: ``sandbox`` (no script, no form, an
opaque origin), inline styles allowed (e-mails are styled inline), nothing fetched from
anywhere (``default-src 'none'``; a remote image or a tracking pixel does not load), and only
the console may frame it. The iframe carries ``sandbox`` too, without ``allow-scripts``.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from starlette.responses import HTMLResponse, Response

from nurture.accounts.sessions import Session
from nurture.core.events import normalise_email
from nurture.errors import NotFound
from nurture.messaging.deliver import load_event
from nurture.messaging.templates import Rendered, TemplateError, TemplateStore, template_store
from nurture.messaging.unsubscribe import signing_key, unsubscribe_url
from nurture.pack import load_pack
from nurture.storage import contacts as contact_store
from nurture.web.console.render import render
from nurture.web.console.security import viewer
from nurture.web.state import web_state

router = APIRouter(prefix="/console", include_in_schema=False)
NAV = ("Templates", "/console/templates")

# The framed preview's own policy (``headers.ConsoleHeaders`` keeps a route's own CSP).
PREVIEW_CSP = (
    "default-src 'none'; style-src 'unsafe-inline'; img-src data:; sandbox; "
    "frame-ancestors 'self'; base-uri 'none'; form-action 'none'"
)


def _store(request: Request) -> TemplateStore:
    state = request.app.state
    found: TemplateStore | None = getattr(state, "console_templates", None)
    if found is None:
        found = template_store(load_pack(web_state(request).container.settings.automation_dir))
        state.console_templates = found
    return found


def _name(request: Request, name: str) -> str:
    if name not in _store(request).names():
        raise NotFound(f"no template {name[:80]!r}")
    return name


def _variables(
    request: Request, name: str, contact_ref: str, event_ref: str
) -> tuple[dict[str, Any], dict[str, str]]:
    """What the sender would pass for this contact and event; problems per form field."""
    store = _store(request)
    errors: dict[str, str] = {}
    if not contact_ref:
        return store.sample_for(name), errors
    container = web_state(request).container
    settings = container.settings
    with container.db.read() as conn:
        contact = None
        if contact_ref.isdigit() and len(contact_ref) < 19:
            contact = contact_store.load(conn, int(contact_ref))
        else:
            email = normalise_email(contact_ref)
            contact = contact_store.load_by_email(conn, email) if email else None
        if contact is None:
            errors["contact"] = f"no contact {contact_ref[:80]!r}"
        event = None
        if event_ref:
            if not event_ref.isdigit() or len(event_ref) > 18:
                errors["event"] = "an event number, e.g. 42"
            else:
                event = load_event(conn, int(event_ref))
                if event is None:
                    errors["event"] = f"no event {event_ref}"
    if errors or contact is None:
        return {}, errors
    variables = {
        "contact": contact.view(),
        "event": event,
        "enrollment": None,
        "step": None,
        "rule_id": None,
        "unsubscribe_url": unsubscribe_url(settings.public_url, signing_key(settings), contact.id),
    }
    return variables, errors


def _render(
    request: Request, name: str, contact_ref: str, event_ref: str
) -> tuple[Rendered | None, str | None, dict[str, str]]:
    variables, errors = _variables(request, name, contact_ref, event_ref)
    if errors:
        return None, None, errors
    try:
        return _store(request).render(name, variables), None, errors
    except TemplateError as exc:
        return None, str(exc), errors


@router.get("/templates")
def templates_page(request: Request, session: Session = Depends(viewer)) -> Response:
    store = _store(request)
    rows = []
    for name in store.names():
        try:
            description = store.meta(name).description
        except TemplateError as exc:
            description = f"meta.yaml: {exc}"
        rows.append({"name": name, "description": description})
    return render(request, session, "templates.html", title="Templates", rows=rows)


@router.get("/templates/{name}")
def template_page(
    request: Request,
    name: str,
    contact: str = "",
    event: str = "",
    session: Session = Depends(viewer),
) -> Response:
    name = _name(request, name)
    contact, event = contact.strip()[:320], event.strip()[:40]
    rendered, problem, errors = _render(request, name, contact, event)
    return render(
        request,
        session,
        "template.html",
        title=f"Template {name}",
        status=422 if errors else 200,
        name=name,
        description=_store(request).meta(name).description,
        contact=contact,
        event=event,
        errors=errors,
        rendered=rendered,
        problem=problem,
    )


@router.get("/templates/{name}/html")
def template_html(
    request: Request,
    name: str,
    contact: str = "",
    event: str = "",
    session: Session = Depends(viewer),
) -> Response:
    name = _name(request, name)
    rendered, problem, errors = _render(request, name, contact.strip()[:320], event.strip()[:40])
    if rendered is None or rendered.html is None:
        body = "<p>No HTML to show.</p>" if not (problem or errors) else "<p>Not rendered.</p>"
        status = 200 if not (problem or errors) else 422
    else:
        body, status = rendered.html, 200
    return HTMLResponse(
        body,
        status_code=status,
        headers={"content-security-policy": PREVIEW_CSP, "x-frame-options": "SAMEORIGIN"},
    )
