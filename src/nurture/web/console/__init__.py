"""The console: server-rendered pages under ``/console`` for the people who run nurture.

Adding a page (the Jobs page is a complete example):

1. A query per thing the page shows, in the aggregate's module in ``storage/`` (one named
   function taking a ``Connection``; counts read an index or a roll-up, never the whole table).
2. A module here, ``web/console/<page>.py``, with ``router = APIRouter(prefix="/console",
   include_in_schema=False)``, ``NAV = ("Label", "/console/<page>")``, GET routes
   depending on ``security.viewer`` and every POST on ``security.admin`` (CSRF token, admin
   role), and each change written to the audit log (``storage.audit.record``) or the contact's
   timeline in the same transaction. Errors are raised as ``nurture.errors`` leaves; the error
   page draws them (``NotFound`` -> 404 page).
3. A template ``templates/<page>.html`` extending ``base.html`` (every form posts
   ``<input type="hidden" name="csrf" value="{{ csrf }}">``).
4. Its module in ``PAGES`` below (the order is the navigation's).
5. An entry in ``bench/console.py`` (``PAGES``) and a browser test in ``tests/browser/``.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from starlette.requests import Request
from starlette.responses import Response
from starlette.staticfiles import StaticFiles

from nurture.web import errors
from nurture.web.console import (
    contacts,
    inbox,
    jobs,
    login,
    overview,
    previews,
    rules,
    sequences,
)
from nurture.web.console.headers import ConsoleHeaders
from nurture.web.console.render import add_nav, render

# The navigation follows this order.
PAGES = (overview, jobs, inbox, contacts, sequences, rules, previews)
STATIC = Path(__file__).parent / "static"

HEADINGS = {
    400: "That request could not be read",
    401: "Please log in",
    403: "Not allowed",
    404: "Not found",
    409: "That cannot be done now",
    422: "Some values are not valid",
    429: "Too many attempts",
    503: "The database cannot take the change",
}


def error_page(
    request: Request, status: int, kind: str, detail: str, extra: dict[str, object]
) -> Response:
    if status == 401 and request.method == "GET":
        return login.login_redirect(request)
    session = request.scope.get("console_session")
    response = render(
        request,
        session,
        "error.html",
        title=HEADINGS.get(status, "Something went wrong"),
        status=status,
        heading=HEADINGS.get(status, "Something went wrong"),
        code=status,
        detail=detail,
        back=request.headers.get("referer") if _same_site(request) else "/console",
    )
    if "retry_after" in extra:
        response.headers["Retry-After"] = str(extra["retry_after"])
    return response


def _same_site(request: Request) -> bool:
    referer = request.headers.get("referer", "")
    return referer.startswith(f"{request.url.scheme}://{request.url.netloc}/console")


def install(app: FastAPI) -> None:
    app.mount("/console/static", StaticFiles(directory=STATIC), name="console-static")
    app.include_router(login.router)
    for page in PAGES:
        app.include_router(page.router)
        add_nav(*page.NAV)
    errors.html_errors(app, "/console", error_page)
    app.add_middleware(ConsoleHeaders)
