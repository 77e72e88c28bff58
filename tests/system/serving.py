"""Real ``nurture serve`` processes and a real nginx in front of them, for the system tests."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
import trustme

from nurture.testing import free_port, signed_json

ROOT = Path(__file__).resolve().parents[2]
NURTURE = str(Path(sys.executable).parent / "nurture")
SITE = ROOT / "deploy" / "nginx" / "nurture.conf"
REQUIRE_TOOLS = os.environ.get("NURTURE_REQUIRE_DEPLOY_TOOLS") == "1"
WAIT_SECONDS = 60.0


def wait_ready(
    url: str,
    proc: subprocess.Popen[bytes],
    log: Path | None = None,
    timeout: float = WAIT_SECONDS,
) -> None:
    """Until ``/readyz`` answers 200; a process that exits first fails with its output (``log``,
    or the tail of its piped stderr)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            if log is not None:
                said = log.read_text()
            else:
                said = proc.stderr.read().decode()[-2000:] if proc.stderr else ""
            raise AssertionError(f"nurture exited with {proc.returncode}:\n{said}")
        try:
            if httpx.get(url + "/readyz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise AssertionError("nurture did not become ready")


@contextmanager
def nurture_serve(
    env: dict[str, str], log: Path, port: int | None = None
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """``nurture serve`` on 127.0.0.1 (a free port unless given); SIGTERM at the end."""
    port = port or free_port()
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [NURTURE, "serve", "--port", str(port)],
            env={**env, "NURTURE_HOST": "127.0.0.1"},
            cwd=log.parent,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_ready(base, proc, log)
        yield base, proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=WAIT_SECONDS)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise


def nginx_binary() -> str:
    found = shutil.which("nginx") or (
        "/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None
    )
    if found is None:
        message = "nginx is not installed (apt-get install nginx-light); .ci/run installs it"
        if REQUIRE_TOOLS:
            pytest.fail(f"NURTURE_REQUIRE_DEPLOY_TOOLS=1 but {message}")
        pytest.skip(message)
    return found


def site_for_test(
    site: str, *, upstreams: list[int], http_port: int, https_port: int, cert: Path, key: Path
) -> str:
    """The shipped site with only what a test machine must differ in: ports, certificate, and
    no IPv6 listeners. Each replacement must apply exactly as often as expected, so the test
    notices when the shipped file changes shape."""
    replacements = [
        (
            "    server 127.0.0.1:8001 max_fails=0;\n    server 127.0.0.1:8002 max_fails=0;\n",
            "".join(f"    server 127.0.0.1:{port} max_fails=0;\n" for port in upstreams),
            1,
        ),
        ("    listen 80;\n    listen [::]:80;\n", f"    listen 127.0.0.1:{http_port};\n", 1),
        (
            "    listen 443 ssl;\n    listen [::]:443 ssl;\n",
            f"    listen 127.0.0.1:{https_port} ssl;\n",
            1,
        ),
        ("/etc/letsencrypt/live/nurture.example.com/fullchain.pem", str(cert), 1),
        ("/etc/letsencrypt/live/nurture.example.com/privkey.pem", str(key), 1),
    ]
    for old, new, count in replacements:
        assert site.count(old) == count, f"{SITE} no longer contains {old!r}"
        site = site.replace(old, new)
    return site


def main_conf(prefix: Path, site: Path) -> str:
    """A main nginx.conf of the test's own: pid, logs and temporary files under ``prefix``."""
    user = "user root root;\n" if os.geteuid() == 0 else ""
    temp = " ".join(
        f"{name}_temp_path {prefix / name};"
        for name in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    return (
        f"{user}daemon off;\nworker_processes 1;\npid {prefix / 'nginx.pid'};\n"
        "error_log stderr warn;\nevents { worker_connections 256; }\n"
        f"http {{\n  access_log off;\n  {temp}\n  include {site};\n}}\n"
    )


class Nginx:
    def __init__(self, https: str, http: str, ca: trustme.CA) -> None:
        self.https, self.http, self.ca = https, http, ca

    def client(self, local_address: str = "127.0.0.2") -> httpx.Client:
        """An HTTPS client connecting from ``local_address`` (any 127.0.0.0/8 address is local)."""
        context = ssl.create_default_context()
        self.ca.configure_trust(context)
        transport = httpx.HTTPTransport(verify=context, local_address=local_address)
        return httpx.Client(base_url=self.https, transport=transport, timeout=30)


def wait_port(port: int, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + WAIT_SECONDS
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"nginx exited with {proc.returncode}:\n{log.read_text()}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise AssertionError("nginx did not listen")


@contextmanager
def nginx_in_front_of(upstreams: list[int], prefix: Path) -> Iterator[Nginx]:
    """The real nginx, as a non-daemon child with its own prefix, serving the shipped site
    with a throw-away certificate for 127.0.0.1."""
    binary = nginx_binary()
    prefix.mkdir(parents=True, exist_ok=True)
    ca = trustme.CA()
    issued = ca.issue_cert("127.0.0.1", "localhost")
    cert, key = prefix / "cert.pem", prefix / "key.pem"
    issued.cert_chain_pems[0].write_to_path(cert)
    issued.private_key_pem.write_to_path(key)
    http_port, https_port = free_port(), free_port()
    site = prefix / "nurture.conf"
    site.write_text(
        site_for_test(
            SITE.read_text(),
            upstreams=upstreams,
            http_port=http_port,
            https_port=https_port,
            cert=cert,
            key=key,
        )
    )
    conf = prefix / "nginx.conf"
    conf.write_text(main_conf(prefix, site))
    log = prefix / "nginx.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [binary, "-p", str(prefix), "-c", str(conf), "-e", "stderr"],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_port(https_port, proc, log)
        yield Nginx(f"https://127.0.0.1:{https_port}", f"http://127.0.0.1:{http_port}", ca)
    finally:
        proc.send_signal(signal.SIGQUIT)  # nginx's graceful stop
        try:
            proc.wait(timeout=WAIT_SECONDS)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
    errors = [
        line for line in log.read_text().splitlines() if "[emerg]" in line or "[alert]" in line
    ]
    assert errors == [], errors


class Load:
    """Threads posting signed track events over keep-alive connections until ``finish`` is set
    or, once ``stopping`` is set, until their connection fails (the server went away)."""

    def __init__(self, connect: Callable[[], httpx.Client], secret: str, threads: int = 6) -> None:
        self.connect, self.secret = connect, secret
        self.accepted: dict[str, int] = {}  # sender's event id -> nurture's event id
        self.failures: list[str] = []  # anything but an acknowledgement, before ``stopping``
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.finish = threading.Event()
        self.threads = [threading.Thread(target=self._post) for _ in range(threads)]

    def _post(self) -> None:
        with self.connect() as client:
            while not self.finish.is_set():
                event_id = uuid.uuid4().hex
                event = {
                    "id": event_id,
                    "type": "page.viewed",
                    "contact": {"email": f"{event_id[:8]}@example.com"},
                    "data": {"url": "/load"},
                }
                body, headers = signed_json(self.secret, event, datetime.now(UTC))
                try:
                    r = client.post("/webhooks/track", content=body, headers=headers)
                except httpx.TransportError as exc:
                    # Refused or closed once the server stops accepting: not acknowledged, the
                    # sender retries. Before that it is a failure.
                    if not self.stopping.is_set():
                        with self.lock:
                            self.failures.append(repr(exc))
                    return
                with self.lock:
                    # 200 "duplicate": a proxy retried a delivery the first instance stored.
                    if r.status_code in (200, 202):
                        self.accepted[event_id] = r.json()["event_ids"][0]
                    else:
                        self.failures.append(f"{r.status_code} {r.text}")

    def wait_for(self, count: int, alive: subprocess.Popen[bytes] | None = None) -> None:
        deadline = time.monotonic() + WAIT_SECONDS
        while len(self.accepted) < count:
            assert time.monotonic() < deadline, f"{len(self.accepted)} of {count} accepted"
            assert not self.failures, self.failures[:5]
            assert alive is None or alive.poll() is None, "nurture exited"
            time.sleep(0.02)

    def __enter__(self) -> Load:
        for t in self.threads:
            t.start()
        return self

    def stop(self) -> None:
        self.stopping.set()
        self.finish.set()
        for t in self.threads:
            t.join(WAIT_SECONDS)

    def __exit__(self, *exc: object) -> None:
        self.stop()
