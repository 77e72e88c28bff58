"""The ASGI app plus an in-process event processor on one database, for e2e tests and demos."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from nurture.bootstrap import Container, build_container, build_processor
from nurture.clock import Clock, VirtualClock
from nurture.config import Settings
from nurture.intake.process import EventProcessor


class Harness:
    """The ASGI app plus an in-process processor on one database."""

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
    try:
        # The app's shutdown (last intake-count flush) still has the database.
        with h.client:
            yield h
    finally:
        h.container.close()
