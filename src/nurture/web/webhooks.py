"""Webhook routes. Plain Starlette endpoints: the hot path skips FastAPI's model machinery.

Order on every route: read the raw bytes (size limit while reading) -> verify -> parse ->
commit -> answer. Nothing is acknowledged before its row is durable.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from nurture.errors import NurtureError
from nurture.providers.track.inbound import WRITE_KEY_HEADER, parse_behavior
from nurture.services.ingest import IngestOutcome
from nurture.web.body import read_limited, require_media_type
from nurture.web.errors import problem_for
from nurture.web.state import web_state

JSON = "application/json"


def answer(outcome: IngestOutcome, headers: dict[str, str] | None = None) -> Response:
    return Response(
        orjson.dumps(outcome.body()),
        status_code=outcome.status_code,
        media_type=JSON,
        headers=headers,
    )


def _cors_headers(request: Request) -> dict[str, str]:
    allowed = web_state(request).container.settings.cors_origins.split()
    origin = request.headers.get("origin")
    if not origin:
        return {}
    if "*" in allowed:
        return {"Access-Control-Allow-Origin": "*"}
    if origin in allowed:
        return {"Access-Control-Allow-Origin": origin, "Vary": "Origin"}
    return {}


def with_cors(
    handler: Callable[[Request], Awaitable[Response]],
) -> Callable[[Request], Awaitable[Response]]:
    """Browsers read the answer (errors included) only with the CORS header on it."""

    async def wrapped(request: Request) -> Response:
        cors = _cors_headers(request)
        try:
            response = await handler(request)
        except NurtureError as exc:
            response = problem_for(exc)
        response.headers.update(cors)
        return response

    return wrapped


async def track_preflight(request: Request) -> Response:
    headers = _cors_headers(request)
    headers.update(
        {
            "Access-Control-Allow-Methods": "POST, OPTIONS",
            "Access-Control-Allow-Headers": f"content-type, authorization, {WRITE_KEY_HEADER}",
            "Access-Control-Max-Age": "86400",
        }
    )
    return Response(status_code=204, headers=headers)


async def track(request: Request) -> Response:
    st = web_state(request)
    settings = st.container.settings
    source = st.track
    raw = await read_limited(request, settings.max_body_bytes)
    mode = source.authenticate(request.headers, raw, st.container.clock.now(), request.query_params)
    # Browsers post beacons as text/plain to avoid a CORS preflight.
    allowed = (JSON,) if mode == "signed" else (JSON, "text/plain")
    ctype = require_media_type(request, *allowed)
    events = source.parse(raw, request.headers)
    if mode == "write_key":
        source.check_write_key_scope(events)
    return answer(await st.ingestor.submit(events, raw, ctype))


async def behavior(request: Request) -> Response:
    """The CRM prototype's ``POST /webhook/behavior`` ({client_code, action, metadata})."""
    st = web_state(request)
    source = st.track
    raw = await read_limited(request, st.container.settings.max_body_bytes)
    mode = source.authenticate(request.headers, raw, st.container.clock.now(), request.query_params)
    ctype = require_media_type(request, JSON)
    events = parse_behavior(raw)
    if mode == "write_key":
        source.check_write_key_scope(events)
    return answer(await st.ingestor.submit(events, raw, ctype))


def routes() -> list[Route]:
    return [
        Route("/webhooks/track", with_cors(track), methods=["POST"]),
        Route("/webhooks/track", track_preflight, methods=["OPTIONS"]),
        Route("/webhook/behavior", behavior, methods=["POST"]),
    ]
