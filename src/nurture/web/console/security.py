"""Who is asking: the signed session cookie, the CSRF check, and the two FastAPI dependencies
every console route uses (``viewer`` to read, ``admin`` to change anything).

The cookie is ``<token>.<mac>``: the token is the random session key the database knows by its
hash; the HMAC (``NURTURE_SECRET_KEY``) lets a forged or truncated cookie be refused before any
database read. A change needs an admin session, the session's CSRF token in the form (field
``csrf``) and, when the browser sends one, an ``Origin`` equal to the console's own.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from datetime import timedelta

from fastapi import Depends, Request

from nurture.accounts.sessions import Policy, Session, resolve
from nurture.config import Settings
from nurture.errors import Forbidden, Unauthenticated
from nurture.web.state import web_state

COOKIE = "nurture_session"
LOGIN_COOKIE = "nurture_login"
PATH = "/console"
DEV_KEY = "nurture-console-development-key"


def policy(settings: Settings) -> Policy:
    return Policy(
        lifetime=timedelta(hours=settings.console_session_hours),
        idle=timedelta(minutes=settings.console_idle_minutes),
    )


def _mac(settings: Settings, purpose: str, value: str) -> str:
    key = (settings.secret_key or DEV_KEY).encode()
    digest = hmac.new(key, f"{purpose}:{value}".encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest[:18]).decode()


def sign(settings: Settings, purpose: str, value: str) -> str:
    return f"{value}.{_mac(settings, purpose, value)}"


def unsign(settings: Settings, purpose: str, signed: str | None) -> str | None:
    if not signed or len(signed) > 200:
        return None
    value, _, mac = signed.rpartition(".")
    if not value or not hmac.compare_digest(mac.encode(), _mac(settings, purpose, value).encode()):
        return None
    return value


def client_addr(request: Request) -> str | None:
    return request.client.host if request.client else None


def is_https(request: Request) -> bool:
    return request.url.scheme == "https"


def current_session(request: Request) -> Session | None:
    """The request's live session, or None; looked up once per request."""
    if "console_session" in request.scope:
        found: Session | None = request.scope["console_session"]
        return found
    state = web_state(request)
    settings = state.container.settings
    token = unsign(settings, "session", request.cookies.get(COOKIE))
    session = None
    if token is not None:
        session = resolve(state.container.db, token, state.container.clock.now(), policy(settings))
    request.scope["console_session"] = session
    return session


def viewer(request: Request) -> Session:
    """Dependency: any logged-in person (a GET without one is sent to the login page)."""
    session = current_session(request)
    if session is None:
        raise Unauthenticated("please log in")
    return session


def check_origin(request: Request) -> None:
    """Browsers send Origin on every POST; one from another site is a forged request."""
    origin = request.headers.get("origin")
    if origin is None or origin == "null":
        return
    own = f"{request.url.scheme}://{request.url.netloc}"
    if origin != own:
        raise Forbidden("this request came from another site")


def check_csrf(request: Request, expected: str, sent: object) -> None:
    if not isinstance(sent, str) or not hmac.compare_digest(sent.encode(), expected.encode()):
        raise Forbidden("the form's security token is missing or out of date; reload the page")
    check_origin(request)


async def admin(request: Request, session: Session = Depends(viewer)) -> Session:
    """Dependency for every change: the CSRF token first, then the admin role."""
    form = await request.form()
    check_csrf(request, session.csrf_token, form.get("csrf"))
    if not session.is_admin:
        raise Forbidden(f"{session.name} is a viewer; only an admin can change anything")
    return session
