"""Webhook routes: the intake hot path, kept lean.

Order on every route: read the raw bytes (size limit while reading) -> verify -> parse ->
commit -> answer. Nothing is acknowledged before its row is durable.

Each route is a ``WebhookEndpoint``, an ASGI app that works on the scope directly: the handler
gets a ``Delivery`` (headers as a plain dict, the body read against its limit) and returns the
ingest outcome, which is answered as JSON; a ``NurtureError`` becomes problem+json through
``web/errors.py`` as everywhere else. ``Intake`` registers each endpoint twice: as a Starlette
route (so slash redirects, 405s and the OPTIONS preflights behave as on any route) and in an
exact-path table that ``NurtureApp`` (``web/app.py``) consults before FastAPI's middleware and
routing stack, which cost about a fifth of a webhook request's CPU. Requests answered from that
table write their access-log line here.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import orjson
from starlette.datastructures import QueryParams
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route
from starlette.types import Receive, Scope, Send

from nurture import logs
from nurture.errors import NotConfigured, NotFound, NurtureError
from nurture.intake.ingest import IngestOutcome
from nurture.intake.tally import Delivery as TallyDelivery
from nurture.intake.tally import reason_for
from nurture.providers.track.inbound import WRITE_KEY_HEADER, parse_behavior
from nurture.web.body import check_media_type, media_type_of, read_body
from nurture.web.errors import problem, problem_for
from nurture.web.metrics import SourceMetrics
from nurture.web.state import WebState, web_state

JSON = "application/json"
_NO_QUERY: Mapping[str, str] = {}


class Delivery:
    """One webhook request as the handlers see it."""

    __slots__ = ("_receive", "_scope", "headers", "raw")

    def __init__(self, scope: Scope, receive: Receive) -> None:
        self._scope = scope
        self._receive = receive
        # The body once read, kept for the Inbox's copy of a rejected request.
        self.raw: bytes | None = None
        # ASGI header names are lower-case; the first of repeated headers wins, as in Starlette.
        headers: dict[str, str] = {}
        for name, value in scope["headers"]:
            key = name.decode("latin-1")
            if key not in headers:
                headers[key] = value.decode("latin-1")
        self.headers = headers

    @property
    def query(self) -> Mapping[str, str]:
        qs = self._scope.get("query_string")
        return QueryParams(qs) if qs else _NO_QUERY

    @property
    def path_params(self) -> dict[str, Any]:
        params: dict[str, Any] = self._scope.get("path_params") or {}
        return params

    @property
    def client_host(self) -> str | None:
        client = self._scope.get("client")
        return client[0] if client else None

    async def body(self, limit: int) -> bytes:
        self.raw = await read_body(self._receive, self.headers, limit)
        return self.raw

    def media_type(self, *allowed: str) -> str:
        """The request's media type if it is one of ``allowed``; 415 otherwise."""
        return check_media_type(media_type_of(self.headers.get("content-type", "")), *allowed)


Handler = Callable[[WebState, Delivery], Awaitable[IngestOutcome]]


class Cors:
    """Browsers read the answer (errors included) only with the CORS header on it."""

    def __init__(self, origins: str) -> None:
        self.allowed = frozenset(origins.split())

    def headers(self, origin: str | None) -> dict[str, str]:
        if not origin:
            return {}
        if "*" in self.allowed:
            return {"Access-Control-Allow-Origin": "*"}
        if origin in self.allowed:
            return {"Access-Control-Allow-Origin": origin, "Vary": "Origin"}
        return {}


_JSON_HEADER = (b"content-type", JSON.encode())


class WebhookEndpoint:
    """One webhook route as an ASGI app."""

    def __init__(
        self,
        state: WebState,
        handler: Handler,
        cors: Cors | None,
        metrics: SourceMetrics,
        source: str,
        route: str,
    ) -> None:
        self.state = state
        self.handler = handler
        self.cors = cors
        self.metrics = metrics
        # The Inbox's name for the sender; "{param}" is filled from the path.
        self.source = source
        self.route = route

    def _record(
        self,
        delivery: Delivery,
        status: int,
        outcome: IngestOutcome | None = None,
        error: NurtureError | None = None,
    ) -> None:
        tally = self.state.tally
        if tally is None:
            return
        params = delivery.path_params
        if params and isinstance(error, NotConfigured | NotFound):
            # Anyone may post to any /webhooks/generic/<id>: unknown ids share one name, so
            # they cannot grow the roll-ups without bound (the Inbox keeps the path itself).
            params = dict.fromkeys(params, "?")
        source = self.source.format(**params) if params else self.source
        if outcome is not None:
            kind = "accepted" if outcome.accepted else "duplicate"
            ids = outcome.accepted + outcome.duplicates
            reason = detail = None
        else:
            kind, ids = "rejected", []
            reason = reason_for(error) if error is not None else "error"
            detail = str(error) if error is not None else "internal error"
        tally.delivery(
            TallyDelivery(
                at=self.state.container.clock.now(),
                source=source,
                route=self._scope_path(delivery),
                outcome=kind,
                status_code=status,
                reason=reason,
                detail=detail,
                event_ids=ids,
                body=delivery.raw if outcome is None else None,
                headers=delivery.headers,
                client_addr=delivery.client_host,
            )
        )

    def _scope_path(self, delivery: Delivery) -> str:
        params = delivery.path_params
        return self.route.format(**params) if params else self.route

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.handle(scope, receive, send)

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> int:
        """Answer the request; return the status sent (499: the client went away first)."""
        delivery = Delivery(scope, receive)
        try:
            outcome = await self.handler(self.state, delivery)
        except NurtureError as exc:
            response = problem_for(exc)
            self._record(delivery, response.status_code, error=exc)
        except ClientDisconnect:
            self.metrics.answered(499, 0)
            return 499
        except Exception:
            self.metrics.answered(500, 0)
            self._record(delivery, 500)
            # As ServerErrorMiddleware does for the other routes: answer 500, then re-raise so
            # the server logs the traceback (and the test client raises it).
            with contextlib.suppress(Exception):
                await problem(500, "internal-error", "internal server error")(scope, receive, send)
            raise
        else:
            self._record(delivery, outcome.status_code, outcome)
            body = orjson.dumps(outcome.body())
            headers = [_JSON_HEADER, (b"content-length", b"%d" % len(body))]
            if self.cors is not None:
                for name, value in self.cors.headers(delivery.headers.get("origin")).items():
                    headers.append((name.lower().encode(), value.encode()))
            await send(
                {"type": "http.response.start", "status": outcome.status_code, "headers": headers}
            )
            await send({"type": "http.response.body", "body": body})
            self.metrics.answered(outcome.status_code, len(outcome.accepted))
            return outcome.status_code
        if self.cors is not None:
            response.headers.update(self.cors.headers(delivery.headers.get("origin")))
        await response(scope, receive, send)
        self.metrics.answered(response.status_code, 0)
        return response.status_code


class Intake:
    """The webhook routes: Starlette routes, plus the exact-path table of the fast path."""

    def __init__(self, state: WebState, *, log_requests: bool) -> None:
        self.state = state
        self.log_requests = log_requests
        self.cors = Cors(state.container.settings.cors_origins)
        self.routes: list[BaseRoute] = []
        self._exact: dict[str, WebhookEndpoint] = {}
        # "/webhooks/forms/{form_id}": (prefix, parameter name, endpoint); one trailing segment.
        self._prefixed: list[tuple[str, str, WebhookEndpoint]] = []

    def post(
        self, path: str, handler: Handler, *, cors: bool = False, source: str | None = None
    ) -> None:
        """``source``: the sender's name in the console (default: the path after /webhooks/);
        its metrics label is the segment after ``/webhooks/`` unless ``source`` is given."""
        # One metrics label per source kind ("generic", not each id: bounded cardinality).
        metrics = self.state.metrics.source((source or path.split("/")[2]).split(":")[0])
        if source is None:
            source = path.removeprefix("/webhooks/").split("/{")[0]
        endpoint = WebhookEndpoint(
            self.state, handler, self.cors if cors else None, metrics, source, path
        )
        self.routes.append(Route(path, endpoint, methods=["POST"]))
        if cors:
            self.routes.append(Route(path, preflight, methods=["OPTIONS"]))
        if "{" not in path:
            self._exact[path] = endpoint
            return
        prefix, _, param = path.partition("{")
        if not prefix.endswith("/") or not param.endswith("}") or "/" in param:
            raise ValueError(f"webhook paths take one trailing parameter: {path}")
        self._prefixed.append((prefix, param[:-1], endpoint))

    def match(self, scope: Scope) -> WebhookEndpoint | None:
        """The endpoint for a POST the fast path can answer; ``None`` leaves it to the router."""
        if scope["method"] != "POST" or scope.get("root_path"):
            return None
        path: str = scope["path"]
        endpoint = self._exact.get(path)
        if endpoint is not None:
            return endpoint
        for prefix, param, endpoint in self._prefixed:
            if path.startswith(prefix):
                value = path[len(prefix) :]
                if value and "/" not in value:
                    scope["path_params"] = {param: value}
                    return endpoint
        return None

    async def serve(
        self, endpoint: WebhookEndpoint, scope: Scope, receive: Receive, send: Send
    ) -> None:
        start = time.perf_counter()
        status = 500
        try:
            status = await endpoint.handle(scope, receive, send)
        finally:
            if self.log_requests:
                ms = round((time.perf_counter() - start) * 1000, 2)
                logs.request(scope["method"], scope["path"], status, ms)


async def preflight(request: Request) -> Response:
    cors = Cors(web_state(request).container.settings.cors_origins)
    headers = cors.headers(request.headers.get("origin"))
    headers.update(
        {
            "Access-Control-Allow-Methods": "POST, OPTIONS",
            "Access-Control-Allow-Headers": f"content-type, authorization, {WRITE_KEY_HEADER}",
            "Access-Control-Max-Age": "86400",
        }
    )
    return Response(status_code=204, headers=headers)


async def track(st: WebState, d: Delivery) -> IngestOutcome:
    source = st.track
    raw = await d.body(st.container.settings.max_body_bytes)
    mode = source.authenticate(d.headers, raw, st.container.clock.now(), d.query)
    # Browsers post beacons as text/plain to avoid a CORS preflight.
    ctype = d.media_type(JSON) if mode == "signed" else d.media_type(JSON, "text/plain")
    events = source.parse(raw, d.headers)
    if mode == "write_key":
        source.check_write_key_scope(events)
    return await st.ingestor.submit(events, raw, ctype, d.client_host)


async def behavior(st: WebState, d: Delivery) -> IngestOutcome:
    """The CRM prototype's ``POST /webhook/behavior`` ({client_code, action, metadata})."""
    source = st.track
    raw = await d.body(st.container.settings.max_body_bytes)
    mode = source.authenticate(d.headers, raw, st.container.clock.now(), d.query)
    ctype = d.media_type(JSON)
    events = parse_behavior(raw)
    if mode == "write_key":
        source.check_write_key_scope(events)
    return await st.ingestor.submit(events, raw, ctype, d.client_host)


def install(intake: Intake) -> None:
    intake.post("/webhooks/track", track, cors=True)
    intake.post("/webhook/behavior", behavior, source="track")
