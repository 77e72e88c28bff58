"""What the HTTP layer holds for the life of the app."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from starlette.requests import Request

from nurture.bootstrap import Container
from nurture.intake.ingest import Ingestor
from nurture.intake.tally import IntakeTally
from nurture.providers.track.inbound import TrackSource
from nurture.web.metrics import Metrics


@dataclass
class WebState:
    container: Container
    ingestor: Ingestor
    track: TrackSource
    tally: IntakeTally | None = None
    sources: dict[str, Any] = field(default_factory=dict)
    metrics: Metrics = field(default_factory=Metrics)


def web_state(request: Request) -> WebState:
    state: WebState = request.app.state.nurture
    return state


def client_addr(request: Request) -> str | None:
    """The client's address for records, audit entries and limits: the TCP peer, or behind a
    proxy in ``NURTURE_TRUSTED_PROXIES`` the client it reports (``runtime.proxy_options``
    rewrites the ASGI scope before nurture sees it), never a header the client chose."""
    return request.client.host if request.client else None
