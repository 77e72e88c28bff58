"""``/console/templates``: every e-mail template, and a preview of one for a chosen contact (and
event) or its sample data (``messaging.preview``): subject, text, and the HTML in a sandboxed
iframe. The HTML comes from a separate route with its own policy: ``sandbox`` (no script, no
form, an opaque origin), inline styles (e-mails are styled inline) but nothing fetched from
anywhere (no remote image, no tracking pixel), framed only by the console."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from starlette.responses import HTMLResponse, Response

from nurture.accounts.sessions import Session
from nurture.errors import NotFound
from nurture.messaging.preview import Preview, preview
from nurture.messaging.templates import TemplateError, TemplateStore, template_store
from nurture.pack import load_pack
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


def _render(request: Request, name: str, contact: str, event: str) -> Preview:
    container = web_state(request).container
    return preview(container.db, container.settings, _store(request), name, contact, event)


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
    shown = _render(request, name, contact, event)
    return render(
        request,
        session,
        "template.html",
        title=f"Template {name}",
        status=422 if shown.errors else 200,
        name=name,
        description=_store(request).meta(name).description,
        contact=contact,
        event=event,
        errors=shown.errors,
        rendered=shown.rendered,
        problem=shown.problem,
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
    shown = _render(request, name, contact.strip()[:320], event.strip()[:40])
    failed = bool(shown.problem or shown.errors)
    if shown.rendered is None or shown.rendered.html is None:
        body = "<p>Not rendered.</p>" if failed else "<p>No HTML to show.</p>"
        status = 422 if failed else 200
    else:
        body, status = shown.rendered.html, 200
    return HTMLResponse(
        body,
        status_code=status,
        headers={"content-security-policy": PREVIEW_CSP, "x-frame-options": "SAMEORIGIN"},
    )
