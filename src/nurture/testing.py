"""Fakes and builders shared by the tests and ``simulate``.

Every port ships a fake here; signed-request builders use the same ``sign`` functions as
``verify``, so tests exercise the real verification path.
"""

from __future__ import annotations

import base64
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any

import orjson

from nurture.bootstrap import Container, build_container, build_processor
from nurture.clock import Clock, VirtualClock
from nurture.config import Settings
from nurture.providers.signing import sign_standard
from nurture.services.process import EventProcessor
from nurture.testing_providers import (  # noqa: F401  (re-exported for tests)
    brevo_request,
    calcom_request,
    resend_request,
    standard_request,
    stripe_request,
)


def new_secret() -> str:
    """A Standard Webhooks secret: ``whsec_`` + base64 of 24 random bytes."""
    return "whsec_" + base64.b64encode(os.urandom(24)).decode()


def signed_json(
    secret: str,
    payload: Any,
    now: datetime,
    *,
    msg_id: str | None = None,
    svix: bool = False,
    content_type: str = "application/json",
) -> tuple[bytes, dict[str, str]]:
    """Body and headers of a Standard Webhooks (or Svix) signed JSON request."""
    body = payload if isinstance(payload, bytes) else orjson.dumps(payload)
    headers = sign_standard(
        secret, msg_id or f"msg_{uuid.uuid4().hex}", int(now.timestamp()), body, svix=svix
    )
    headers["content-type"] = content_type
    return body, headers


class Harness:
    """The ASGI app plus an in-process processor on one database, for e2e tests and demos."""

    def __init__(self, settings: Settings, clock: Clock | None = None) -> None:
        from starlette.testclient import TestClient

        from nurture.web.app import create_app

        self.container: Container = build_container(settings, clock=clock)
        self.app = create_app(self.container, access_log=False)
        self.client = TestClient(self.app, raise_server_exceptions=True)
        self.processor: EventProcessor = build_processor(self.container)

    @property
    def clock(self) -> Clock:
        return self.container.clock

    def process(self) -> int:
        return self.processor.drain()

    def close(self) -> None:
        self.client.close()
        self.container.close()


@contextmanager
def harness(settings: Settings, clock: VirtualClock | None = None) -> Iterator[Harness]:
    h = Harness(settings, clock)
    with h.client:
        try:
            yield h
        finally:
            h.container.close()
