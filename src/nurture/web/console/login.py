"""``/console/login`` and ``/console/logout``."""

from __future__ import annotations

import asyncio
import secrets
from urllib.parse import quote

from fastapi import APIRouter, Depends, Request
from starlette.responses import RedirectResponse, Response

from nurture.accounts import sessions
from nurture.accounts.sessions import Session
from nurture.errors import TooManyAttempts, Unauthenticated
from nurture.web.console import security
from nurture.web.console.render import render
from nurture.web.state import web_state

router = APIRouter(prefix="/console", include_in_schema=False)


def safe_next(value: object) -> str:
    """Only a console path: ``next`` must not send anyone to another site."""
    if (
        isinstance(value, str)
        and value.startswith("/console")
        and "//" not in value
        and "\\" not in value
        and len(value) < 500
    ):
        return value
    return "/console"


def _form(
    request: Request,
    *,
    name: str = "",
    next_path: str = "/console",
    errors: dict[str, str] | None = None,
    message: str | None = None,
    status: int = 200,
) -> Response:
    settings = web_state(request).container.settings
    nonce = secrets.token_urlsafe(24)
    response = render(
        request,
        None,
        "login.html",
        title="Log in",
        status=status,
        login_csrf=nonce,
        name=name,
        next_path=next_path,
        errors=errors or {},
        message=message,
    )
    response.set_cookie(
        security.LOGIN_COOKIE,
        security.sign(settings, "login", nonce),
        max_age=3600,
        path=security.PATH,
        httponly=True,
        samesite="lax",
        secure=security.is_https(request),
    )
    return response


@router.get("/login")
def login_page(request: Request) -> Response:
    if security.current_session(request) is not None:
        return RedirectResponse(safe_next(request.query_params.get("next")), status_code=303)
    return _form(request, next_path=safe_next(request.query_params.get("next")))


@router.post("/login")
async def login(request: Request) -> Response:
    state = web_state(request)
    settings = state.container.settings
    form = await request.form()
    name = str(form.get("name") or "").strip()
    password = str(form.get("password") or "")
    next_path = safe_next(form.get("next"))
    expected = security.unsign(settings, "login", request.cookies.get(security.LOGIN_COOKIE))
    if expected is None:
        return _form(
            request,
            name=name,
            next_path=next_path,
            status=403,
            message="The login form expired (or cookies are off); please try again.",
        )
    security.check_csrf(request, expected, form.get("csrf"))
    errors = {}
    if not name:
        errors["name"] = "Enter your user name."
    elif len(name) > 100:
        errors["name"] = "At most 100 characters."
    if not password:
        errors["password"] = "Enter your password."
    if errors:
        return _form(request, name=name, next_path=next_path, errors=errors, status=422)
    addr = security.client_addr(request)
    try:
        token, session = await asyncio.to_thread(
            sessions.login,
            state.container.db,
            name=name,
            password=password,
            addr=addr,
            now=state.container.clock.now(),
            policy=security.policy(settings),
        )
    except TooManyAttempts as exc:
        response = _form(request, name=name, next_path=next_path, status=429, message=str(exc))
        response.headers["Retry-After"] = str(max(1, round(exc.retry_after)))
        return response
    except Unauthenticated as exc:
        return _form(request, name=name, next_path=next_path, status=401, message=str(exc))
    response = RedirectResponse(next_path, status_code=303)
    response.set_cookie(
        security.COOKIE,
        security.sign(settings, "session", token),
        max_age=int((session.expires_at - state.container.clock.now()).total_seconds()),
        path=security.PATH,
        httponly=True,
        samesite="lax",
        secure=security.is_https(request),
    )
    response.delete_cookie(security.LOGIN_COOKIE, path=security.PATH)
    return response


@router.post("/logout")
async def logout(request: Request, session: Session = Depends(security.viewer)) -> Response:
    form = await request.form()
    security.check_csrf(request, session.csrf_token, form.get("csrf"))
    state = web_state(request)
    await asyncio.to_thread(
        sessions.logout,
        state.container.db,
        session,
        state.container.clock.now(),
        security.client_addr(request),
    )
    response = RedirectResponse("/console/login", status_code=303)
    response.delete_cookie(security.COOKIE, path=security.PATH)
    return response


def login_redirect(request: Request) -> Response:
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return RedirectResponse(f"/console/login?next={quote(safe_next(target))}", status_code=303)
