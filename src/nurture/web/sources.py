"""Provider, form and generic webhook routes, plus the prototypes' compatibility routes.

Same order as ``/webhooks/track``: read the raw bytes (size limit while reading) -> verify on
those bytes -> content type -> parse -> commit -> answer. A source whose secret is unset
answers 404 "not configured" before reading anything.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

from nurture.core.events import InboundEvent
from nurture.errors import NotConfigured, NotFound
from nurture.intake.ingest import IngestOutcome
from nurture.pack import load_pack
from nurture.providers.brevo.inbound import BrevoSource
from nurture.providers.calcom.inbound import CalcomSource
from nurture.providers.catalog import build_sources
from nurture.providers.forms.inbound import FORM_MEDIA, FormSource
from nurture.web.state import WebState
from nurture.web.webhooks import JSON, Delivery, Handler, Intake

CHRISTMAS_FORM = "christmas-assessment"


def install(intake: Intake) -> None:
    """Build the sources from Settings and the automation folder; add their routes."""
    st = intake.state
    settings = st.container.settings
    built = build_sources(settings, load_pack(settings.automation_dir))
    st.sources.update(built.providers)
    st.sources.update({f"generic/{k}": v for k, v in built.generic.items()})
    st.sources.update({f"forms/{k}": v for k, v in built.forms.items()})
    intake.post("/webhooks/brevo", _provider("brevo"))
    intake.post("/webhooks/resend", _provider("resend"))
    intake.post("/webhooks/calcom", _provider("calcom"))
    intake.post("/webhooks/stripe", _provider("stripe"))
    intake.post("/webhooks/generic/{source_id}", generic, source="generic:{source_id}")
    intake.post("/webhooks/forms/{form_id}", form, cors=True, source="forms")
    # compatibility routes for users of the prototypes, same verification as above
    intake.post("/webhook/email", _provider("brevo", legacy=True), source="brevo")
    intake.post("/webhook/calcom-booking", _provider("calcom", legacy=True), source="calcom")
    intake.post("/webhook/christmas-signup", christmas_signup, cors=True, source="forms")


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


Parse = Callable[[Any, bytes, Delivery], list[InboundEvent]]


async def _receive(st: WebState, d: Delivery, key: str, parse: Parse) -> IngestOutcome:
    source = _source(st, key)
    if isinstance(source, BrevoSource):
        source.check_client(d.client_host)
    raw = await d.body(st.container.settings.max_body_bytes)
    source.verify(d.headers, raw, st.container.clock.now())
    ctype = d.media_type(JSON)
    events = _whole_delivery(parse(source, raw, d), raw)
    return await st.ingestor.submit(events, raw, ctype, d.client_host)


def _modern(source: Any, raw: bytes, d: Delivery) -> list[InboundEvent]:
    events: list[InboundEvent] = source.parse(raw, d.headers)
    return events


def _legacy(source: Any, raw: bytes, d: Delivery) -> list[InboundEvent]:
    assert isinstance(source, BrevoSource | CalcomSource)
    return source.parse_legacy(raw)


def _provider(key: str, *, legacy: bool = False) -> Handler:
    parse = _legacy if legacy else _modern

    async def endpoint(st: WebState, d: Delivery) -> IngestOutcome:
        return await _receive(st, d, key, parse)

    return endpoint


async def generic(st: WebState, d: Delivery) -> IngestOutcome:
    return await _receive(st, d, f"generic/{d.path_params['source_id']}", _modern)


async def _submit_form(st: WebState, d: Delivery, form_id: str) -> IngestOutcome:
    form = st.sources.get(f"forms/{form_id}")
    if not isinstance(form, FormSource):
        raise NotFound(f"no form {form_id!r} is declared in the automation folder")
    raw = await d.body(st.container.settings.max_body_bytes)
    form.authenticate(d.headers, raw, st.container.clock.now(), d.query)
    ctype = d.media_type(JSON, FORM_MEDIA)
    events = form.parse(raw, d.headers, client_addr=d.client_host)
    return await st.ingestor.submit(events, raw, ctype, d.client_host)


async def form(st: WebState, d: Delivery) -> IngestOutcome:
    return await _submit_form(st, d, d.path_params["form_id"])


async def christmas_signup(st: WebState, d: Delivery) -> IngestOutcome:
    """The Christmas prototype's ``POST /webhook/christmas-signup``."""
    return await _submit_form(st, d, CHRISTMAS_FORM)
