"""The ASGI app factory."""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI

from nurture import __version__
from nurture.bootstrap import Container
from nurture.providers.track.inbound import TrackSource
from nurture.services.ingest import Ingestor
from nurture.web import (
    admin,
    commerce,
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
from nurture.web.messages import router as delivery_admin_router
from nurture.web.state import WebState


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
) -> FastAPI:
    settings = container.settings
    ingestor = Ingestor(
        container.db, container.clock, partitions=settings.partitions, on_commit=on_commit
    )
    track = TrackSource(
        settings.track_secrets,
        settings.write_key_list,
        tolerance=settings.signature_tolerance_seconds,
        max_events=settings.max_batch_events,
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        ingestor.close()

    app = FastAPI(
        title="nurture",
        version=__version__,
        description="Webhook-driven marketing automation: sources in, contacts, rules, sends out.",
        lifespan=lifespan,
        **_no_native_telemetry(),
    )
    app.state.nurture = WebState(container=container, ingestor=ingestor, track=track)
    errors.install(app)
    for route in [*webhooks.routes(), *health.routes()]:
        app.router.routes.append(route)
    sources.install(app)
    app.include_router(admin.router)
    app.include_router(events_api.router)
    app.include_router(rules.router)
    app.include_router(commerce.router)
    app.include_router(jobs.router)
    app.include_router(sequences.router)
    app.include_router(metrics.router)
    app.include_router(unsubscribe.router)
    app.include_router(delivery_admin_router)  # messages, suppressions, endpoints
    if access_log:
        app.add_middleware(AccessLog)
    return app
