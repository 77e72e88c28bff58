"""What the HTTP layer holds for the life of the app."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from starlette.requests import Request

from nurture.bootstrap import Container
from nurture.intake.ingest import Ingestor
from nurture.intake.tally import IntakeTally
from nurture.providers.track.inbound import TrackSource


@dataclass
class WebState:
    container: Container
    ingestor: Ingestor
    track: TrackSource
    tally: IntakeTally | None = None
    sources: dict[str, Any] = field(default_factory=dict)


def web_state(request: Request) -> WebState:
    state: WebState = request.app.state.nurture
    return state
