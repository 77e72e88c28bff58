"""Real HTTP servers on 127.0.0.1 for tests: ``serve`` runs a Starlette app under uvicorn in a
thread, ``HookRecorder`` stands for Discord, Slack and JSON catch hooks.

Requests are recorded with their headers and JSON bodies; ``script`` queues answers (e.g. a 429
with ``Retry-After``) returned before normal handling.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import orjson
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route


@dataclass
class Recorded:
    method: str
    path: str
    headers: dict[str, str]
    body: Any
    at: float


@dataclass
class Scripted:
    status: int
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)


class Recorder:
    """Records requests; ``script`` forces the next answers."""

    def __init__(self) -> None:
        self.requests: list[Recorded] = []
        self.script: list[Scripted] = []
        self.lock = threading.Lock()

    async def record(self, request: Request) -> tuple[Recorded, Response | None]:
        raw = await request.body()
        try:
            body = orjson.loads(raw) if raw else None
        except ValueError:
            body = raw.decode(errors="replace")
        entry = Recorded(
            request.method, request.url.path, dict(request.headers), body, time.monotonic()
        )
        with self.lock:
            self.requests.append(entry)
            forced = self.script.pop(0) if self.script else None
        if forced is None:
            return entry, None
        return entry, JSONResponse(forced.body, status_code=forced.status, headers=forced.headers)


# -- catch hooks ------------------------------------------------------------------------------


class HookRecorder(Recorder):
    """Discord, Slack or a JSON catch hook: records POSTs, answers ``ok_status``."""

    def __init__(self, ok_status: int = 204, ok_body: str = "") -> None:
        super().__init__()
        self.ok_status = ok_status
        self.ok_body = ok_body

    async def hook(self, request: Request) -> Response:
        _, forced = await self.record(request)
        if forced is not None:
            return forced
        return Response(self.ok_body, status_code=self.ok_status)

    def app(self) -> Starlette:
        return Starlette(routes=[Route("/{path:path}", self.hook, methods=["POST"])])

    @property
    def bodies(self) -> list[Any]:
        return [r.body for r in self.requests]


# -- the server ---------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _closing(app: Starlette) -> Any:
    """Answer with ``Connection: close``: clients keep no sockets across test event loops."""

    async def wrapped(scope: Any, receive: Any, send: Any) -> None:
        async def send_closing(message: Any) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), (b"connection", b"close")]
            await send(message)

        await app(scope, receive, send_closing)

    return wrapped


@contextmanager
def serve(app: Starlette, *, tls_pem: str | None = None) -> Iterator[str]:
    """Serve ``app`` on 127.0.0.1 in a thread; yields its base URL. ``tls_pem`` (a file with
    the key and certificate chain) serves HTTPS."""
    port = free_port()
    config = uvicorn.Config(
        _closing(app),
        host="127.0.0.1",
        port=port,
        log_config=None,
        lifespan="off",
        ws="none",
        access_log=False,
        ssl_certfile=tls_pem,
        ssl_keyfile=tls_pem,
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("local test server did not start")
        time.sleep(0.01)
    try:
        yield f"{'https' if tls_pem else 'http'}://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


def wait_for(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.01)
