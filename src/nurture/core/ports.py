"""Ports the outer layers implement. Each has a fake in ``nurture.testing``."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Protocol

from nurture.core.events import InboundEvent


class Source(Protocol):
    """An inbound webhook source. ``verify`` runs on the raw bytes before anything parses them."""

    name: str

    def verify(self, headers: Mapping[str, str], raw_body: bytes, now: datetime) -> None:
        """Raise ``Unauthenticated`` (or ``NotConfigured``) unless the request is authentic."""

    def parse(self, raw_body: bytes, headers: Mapping[str, str]) -> list[InboundEvent]:
        """Turn the verified body into canonical events.

        Raises ``MalformedPayload`` or ``InvalidFields``.
        """
