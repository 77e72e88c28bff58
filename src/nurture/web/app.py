"""The ASGI app factory."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from starlette.types import Receive, Scope, Send

from nurture import __version__
from nurture.bootstrap import Container
from nurture.intake.ingest import Ingestor
from nurture.intake.tally import IntakeTally
from nurture.providers.track.inbound import TrackSource
from nurture.web import (
    admin,
    commerce,
    console,
    errors,
    events_api,
    health,
    jobs,
    metrics,
    rules,
    sequences,
    sources,
    unsubscribe,
    webhooks,
)
from nurture.web.access import AccessLog
from nurture.web.audit import AuditLog
from nurture.web.messages import router as delivery_admin_router
from nurture.web.state import WebState
from nurture.web.webhooks import Intake


class NurtureApp(FastAPI):
    """FastAPI, except that webhook deliveries skip its middleware and routing stack.

    The webhook routes are the hot path: ``Intake`` answers an exact-path POST itself (access-log
    line included) and everything else, webhook OPTIONS, redirects and 405s included, goes
    through FastAPI as usual.
    """

    intake: Intake | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        intake = self.intake
        if intake is not None and scope["type"] == "http":
            endpoint = intake.match(scope)
            if endpoint is not None:
                await intake.serve(endpoint, scope, receive, send)
                return
        await super().__call__(scope, receive, send)


def _no_native_telemetry() -> dict[str, Any]:
    """Newer FastAPI versions trace every request and read os.environ doing so (about a tenth of
    the webhook hot path); nurture reports through its logs and /metrics instead."""
    if "telemetry" in inspect.signature(FastAPI).parameters:
        return {"telemetry": {"tracing": False, "metrics": False, "logs": False}}
    return {}


def create_app(
    container: Container,
    *,
    on_commit: Callable[[], None] | None = None,
    access_log: bool = True,
) -> NurtureApp:
    settings = container.settings
    tally = IntakeTally(container.db, container.clock, inbox_keep=settings.inbox_keep)
    ingestor = Ingestor(
        container.db,
        container.clock,
        partitions=settings.partitions,
        on_commit=on_commit,
        tally=tally,
    )
    track = TrackSource(
        settings.track_secrets,
        settings.write_key_list,
        tolerance=settings.signature_tolerance_seconds,
        max_events=settings.max_batch_events,
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        flusher = asyncio.create_task(_flush_every(tally, settings.console_flush_seconds))
        try:
            yield
        finally:
            flusher.cancel()
            ingestor.close()
            await asyncio.to_thread(tally.flush)

    app = NurtureApp(
        title="nurture",
        version=__version__,
        description="Webhook-driven marketing automation: sources in, contacts, rules, sends out.",
        lifespan=lifespan,
        **_no_native_telemetry(),
    )
    state = WebState(container=container, ingestor=ingestor, track=track, tally=tally)
    app.state.nurture = state
    errors.install(app)
    intake = Intake(state, log_requests=access_log)
    webhooks.install(intake)
    sources.install(intake)
    app.router.routes.extend(intake.routes)
    app.router.routes.extend(health.routes())
    app.intake = intake
    app.include_router(admin.router)
    app.include_router(events_api.router)
    app.include_router(rules.router)
    app.include_router(commerce.router)
    app.include_router(jobs.router)
    app.include_router(sequences.router)
    app.include_router(metrics.router)
    app.include_router(unsubscribe.router)
    app.include_router(delivery_admin_router)  # messages, suppressions, endpoints
    console.install(app)
    app.add_middleware(AuditLog, db=container.db, clock=container.clock)
    if access_log:
        app.add_middleware(AccessLog)
    return app


async def _flush_every(tally: IntakeTally, seconds: float) -> None:
    while True:
        await asyncio.sleep(seconds)
        await asyncio.to_thread(tally.flush)
