"""Brevo's or Resend's documented API over real HTTP on 127.0.0.1, for worker processes (the
system tests) and for ``bench/delivery.py``.

The request checks are those of the ``httpx.MockTransport`` fakes in
``nurture.testing.provider_apis``; this only puts them behind a socket.
"""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx

from nurture.testing.provider_apis import FakeBrevo, FakeResend

# How long a held answer waits for ``release`` at most.
HOLD_SECONDS = 60.0


class ProviderServer:
    """Serves a fake's ``handle`` over real HTTP, as if at the provider's documented host.

    With ``hold_first`` the answer to the first request that was accepted (one e-mail, or a
    whole batch) is held back (``held`` is set) until ``release``: the provider has the e-mails,
    the sender never learns it. With ``hold_all`` every answer is held until ``release``.
    ``keep_requests=False`` forgets each request once answered (a long benchmark's memory).
    """

    def __init__(
        self,
        fake: FakeResend | FakeBrevo,
        origin: str,
        *,
        hold_first: bool = False,
        hold_all: bool = False,
        keep_requests: bool = True,
    ) -> None:
        self.fake, self.origin = fake, origin
        self.hold_first, self.hold_all = hold_first, hold_all
        self.keep_requests = keep_requests
        self.held, self.release = threading.Event(), threading.Event()
        self.errors: list[str] = []
        self.lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def accepted(self) -> int:
        """E-mails the provider has, whether they came one per request or as a batch."""
        with self.lock:
            return len(self.fake.accepted)

    def _answer(self, method: str, path: str, headers: dict[str, str], body: bytes) -> Any:
        request = httpx.Request(method, self.origin + path, headers=headers, content=body)
        with self.lock:
            accepted = len(self.fake.accepted)
            try:
                response = self.fake.handle(request)
            except AssertionError as exc:  # a request the documented API would refuse
                self.errors.append(f"{method} {path}: {exc!r}")
                return httpx.Response(400, json={"message": "request does not match the API"})
            if not self.keep_requests:
                self.fake.requests.clear()
            hold = self.hold_all or (
                self.hold_first and accepted == 0 and len(self.fake.accepted) > 0
            )
        if hold:
            self.held.set()
            self.release.wait(HOLD_SECONDS)
        return response

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # http.server writes the headers and the body separately; with Nagle on, the body
            # waits for the client's delayed ACK of the headers (~40 ms a request), a stall real
            # API servers do not have (they set TCP_NODELAY, as httpx does on its side).
            disable_nagle_algorithm = True

            def _serve(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length) if length else b""
                headers = {k.lower(): v for k, v in self.headers.items()}
                response = server._answer(self.command, self.path, headers, body)
                content = response.content
                try:
                    self.send_response(response.status_code)
                    self.send_header("content-type", "application/json")
                    self.send_header("content-length", str(len(content)))
                    self.end_headers()
                    self.wfile.write(content)
                except OSError:
                    pass  # the worker was killed while we held the answer back

            do_GET = do_POST = _serve

            def log_message(self, *args: Any) -> None:
                pass

        return Handler

    def __enter__(self) -> ProviderServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()
