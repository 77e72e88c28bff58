"""Provider, form and generic webhook routes, plus the prototypes' compatibility routes.

Same order as ``/webhooks/track``: read the raw bytes (size limit while reading) -> verify on
those bytes -> content type -> parse -> commit -> answer. A source whose secret is unset
answers 404 "not configured" before reading anything.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Any

from fastapi import FastAPI
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from nurture.automation import load_pack
from nurture.core.events import InboundEvent
from nurture.errors import NotConfigured, NotFound
from nurture.providers.brevo.inbound import BrevoSource
from nurture.providers.calcom.inbound import CalcomSource
from nurture.providers.catalog import build_sources
from nurture.providers.forms.inbound import FORM_MEDIA, FormSource
from nurture.web.body import read_limited, require_media_type
from nurture.web.state import WebState, web_state
from nurture.web.webhooks import JSON, answer, track_preflight, with_cors

CHRISTMAS_FORM = "christmas-assessment"


def install(app: FastAPI) -> None:
    """Build the sources from Settings and the automation folder; add their routes."""
    st: WebState = app.state.nurture
    settings = st.container.settings
    built = build_sources(settings, load_pack(settings.automation_dir))
    st.sources.update(built.providers)
    st.sources.update({f"generic/{k}": v for k, v in built.generic.items()})
    st.sources.update({f"forms/{k}": v for k, v in built.forms.items()})
    app.router.routes.extend(routes())


def _source(st: WebState, key: str) -> Any:
    source = st.sources.get(key)
    if source is None:
        raise NotConfigured(
            f"source {key!r} is not configured: declare it under sources: in the automation folder"
        )
    return source


def _whole_delivery(events: list[InboundEvent], raw: bytes) -> list[InboundEvent]:
    """Several events parsed from one body (Cal.com attendees) each keep that body."""
    if len(events) < 2:
        return events
    return [e if e.raw is not None else replace(e, raw=raw) for e in events]


async def _receive(
    request: Request,
    key: str,
    parse: Callable[[Any, bytes, Request], list[InboundEvent]],
) -> Response:
    st = web_state(request)
    source = _source(st, key)
    if isinstance(source, BrevoSource):
        source.check_client(request.client.host if request.client else None)
    raw = await read_limited(request, st.container.settings.max_body_bytes)
    source.verify(request.headers, raw, st.container.clock.now())
    ctype = require_media_type(request, JSON)
    events = _whole_delivery(parse(source, raw, request), raw)
    return answer(await st.ingestor.submit(events, raw, ctype))


def _modern(source: Any, raw: bytes, request: Request) -> list[InboundEvent]:
    events: list[InboundEvent] = source.parse(raw, request.headers)
    return events


def _legacy(source: Any, raw: bytes, request: Request) -> list[InboundEvent]:
    assert isinstance(source, BrevoSource | CalcomSource)
    return source.parse_legacy(raw)


def _provider(key: str, *, legacy: bool = False) -> Callable[[Request], Awaitable[Response]]:
    parse = _legacy if legacy else _modern

    async def endpoint(request: Request) -> Response:
        return await _receive(request, key, parse)

    return endpoint


async def generic(request: Request) -> Response:
    return await _receive(request, f"generic/{request.path_params['source_id']}", _modern)


async def _submit_form(request: Request, form_id: str) -> Response:
    st = web_state(request)
    form = st.sources.get(f"forms/{form_id}")
    if not isinstance(form, FormSource):
        raise NotFound(f"no form {form_id!r} is declared in the automation folder")
    raw = await read_limited(request, st.container.settings.max_body_bytes)
    form.authenticate(request.headers, raw, st.container.clock.now(), request.query_params)
    ctype = require_media_type(request, JSON, FORM_MEDIA)
    events = form.parse(raw, request.headers)
    return answer(await st.ingestor.submit(events, raw, ctype))


async def form(request: Request) -> Response:
    return await _submit_form(request, request.path_params["form_id"])


async def christmas_signup(request: Request) -> Response:
    """The Christmas prototype's ``POST /webhook/christmas-signup``."""
    return await _submit_form(request, CHRISTMAS_FORM)


def routes() -> list[Route]:
    return [
        Route("/webhooks/brevo", _provider("brevo"), methods=["POST"]),
        Route("/webhooks/resend", _provider("resend"), methods=["POST"]),
        Route("/webhooks/calcom", _provider("calcom"), methods=["POST"]),
        Route("/webhooks/stripe", _provider("stripe"), methods=["POST"]),
        Route("/webhooks/generic/{source_id}", generic, methods=["POST"]),
        Route("/webhooks/forms/{form_id}", with_cors(form), methods=["POST"]),
        Route("/webhooks/forms/{form_id}", track_preflight, methods=["OPTIONS"]),
        # compatibility routes for users of the prototypes, same verification as above
        Route("/webhook/email", _provider("brevo", legacy=True), methods=["POST"]),
        Route("/webhook/calcom-booking", _provider("calcom", legacy=True), methods=["POST"]),
        Route("/webhook/christmas-signup", with_cors(christmas_signup), methods=["POST"]),
        Route("/webhook/christmas-signup", track_preflight, methods=["OPTIONS"]),
    ]
