"""A delivery worker that stops right before its first provider call:
``python -m tests.system.delivery_worker PAUSED_FILE`` (settings from ``NURTURE_*``, like
``nurture worker``).

It runs the real job worker loop with the real ``send_email`` handler and HTTP client; only the
transport under the client is wrapped: the first request touches ``PAUSED_FILE`` and never goes
out. By then the ``messages`` row is claimed and committed, so a SIGKILL at that point is a crash
between the claim and the provider call, placed without any hook in nurture itself.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import httpx

from nurture.bootstrap import build_container
from nurture.bootstrap.delivery import build_delivery, register
from nurture.config import load_settings
from nurture.jobs import HandlerRegistry, JobWorker
from nurture.runtime import install_stop_signals


class PauseBeforeSending(httpx.AsyncBaseTransport):
    def __init__(self, paused: Path) -> None:
        self.paused = paused

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.paused.touch()
        await asyncio.Event().wait()  # until the test kills the process
        raise AssertionError("unreachable")


async def main(paused: Path) -> None:
    container = build_container(load_settings())
    services = build_delivery(
        container.settings, container.db, container.clock, transport=PauseBeforeSending(paused)
    )
    registry = HandlerRegistry()
    register(registry, services)
    stop = asyncio.Event()
    install_stop_signals(stop)
    try:
        await JobWorker(container, registry).run(stop)
    finally:
        await services.aclose()
        container.close()


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1])))
