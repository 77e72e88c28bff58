"""Every change made through the admin API lands in ``audit_log``, with the API key's name.

One place for every route, present and future: ``require_api_key`` notes the key's name on the
request, and this middleware writes one entry per authenticated POST/PUT/PATCH/DELETE under
``/api/v1`` once its status is known: ``outcome`` ``done`` for a 2xx, ``refused`` with the status
otherwise (403, 404, 409, 422...). A request without a valid key (401) names nobody and changes
nothing, so it is not recorded. Handlers whose use case already writes a richer entry in its own
transaction (the erasure) call ``mark_audited`` so the change is not recorded twice.

Not audited: ``POST /api/v1/events`` (event intake by API, the webhook of servers: its record is
the ``events`` table) and dry runs, which change nothing.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from nurture.clock import Clock
from nurture.database.engine import Database
from nurture.storage import audit

log = logging.getLogger("nurture.audit")

MUTATING = frozenset({"POST", "PUT", "PATCH", "DELETE"})
PREFIX = "/api/v1/"
NOT_CHANGES = frozenset({"/api/v1/events", "/api/v1/rules/dry-run"})

# Keys of the request state (``scope["state"]``), which the middleware reads after the handler.
_KEY = "nurture_api_key"
_DONE = "nurture_audited"


def note_api_key(request: Request, name: str) -> None:
    request.state.nurture_api_key = name


def mark_audited(request: Request) -> None:
    """The handler's use case wrote its own audit entry (same transaction as the change)."""
    request.state.nurture_audited = True


def client_addr(request: Request) -> str | None:
    # uvicorn has already applied its forwarded-header rules (--forwarded-allow-ips).
    return request.client.host if request.client else None


def _target(scope: Scope, path: str) -> tuple[str, str | None]:
    """``("jobs", "12")`` for ``/api/v1/jobs/12/retry``: the area and the first path value."""
    kind = path[len(PREFIX) :].split("/", 1)[0] or "api"
    params: dict[str, Any] = scope.get("path_params") or {}
    first = next(iter(params.values()), None)
    return kind, None if first is None else str(first)[:320]


class AuditLog:
    """Pure ASGI middleware; everything that is not an admin API change passes untouched."""

    def __init__(self, app: ASGIApp, db: Database, clock: Clock) -> None:
        self.app = app
        self.db = db
        self.clock = clock

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if (
            scope["type"] != "http"
            or scope["method"] not in MUTATING
            or not path.startswith(PREFIX)
            or path.rstrip("/") in NOT_CHANGES
        ):
            await self.app(scope, receive, send)
            return
        status = 500

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            await self._record(scope, path, status)

    async def _record(self, scope: Scope, path: str, status: int) -> None:
        state: dict[str, Any] = scope.get("state") or {}
        key_name = state.get(_KEY)
        if key_name is None or state.get(_DONE):
            return
        route = scope.get("route")
        template = getattr(route, "path", path)
        kind, target_id = _target(scope, path)
        client = scope.get("client")
        entry = {
            "at": self.clock.now(),
            "actor": f"key:{key_name}",
            "action": f"{scope['method']} {template}",
            "target_kind": kind,
            "target_id": target_id,
            "detail": {
                "path": path,
                "status": status,
                "outcome": "done" if 200 <= status < 300 else "refused",
            },
            "client_addr": client[0] if client else None,
        }
        try:
            await asyncio.to_thread(self._write, entry)
        except Exception:
            # The change is committed already; failing the response would not undo it.
            log.exception("could not write an audit entry", extra={"action": "audit.error"})

    def _write(self, entry: dict[str, Any]) -> None:
        with self.db.begin() as conn:
            audit.record(conn, **entry)
