"""Liveness, readiness and the prototype's health route."""

from __future__ import annotations

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from nurture.database import migrate
from nurture.web.state import web_state

JSON = "application/json"


async def healthz(request: Request) -> Response:
    return Response(b'{"status":"ok"}', media_type=JSON)


async def readyz(request: Request) -> Response:
    db = web_state(request).container.db
    try:
        current = migrate.current_revision(db)
        head = migrate.head_revision(db)
    except Exception as exc:  # any failure to reach the database means "not ready"
        body = {"status": "unavailable", "database": f"unreachable: {type(exc).__name__}"}
        return Response(orjson.dumps(body), status_code=503, media_type=JSON)
    if current != head:
        body = {"status": "unavailable", "database": f"not migrated ({current} != {head})"}
        return Response(orjson.dumps(body), status_code=503, media_type=JSON)
    return Response(orjson.dumps({"status": "ready", "revision": current}), media_type=JSON)


async def prototype_health(request: Request) -> Response:
    now = web_state(request).container.clock.now()
    return Response(
        orjson.dumps({"status": "healthy", "timestamp": now.isoformat()}), media_type=JSON
    )


def routes() -> list[Route]:
    return [
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
        Route("/webhook/health", prototype_health, methods=["GET"]),
    ]
