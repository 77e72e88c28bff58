"""The address nurture records and allowlists: the TCP peer, or, behind a proxy named in
``NURTURE_TRUSTED_PROXIES``, the client that proxy reports; never a header a client chose.

The app is wrapped exactly as ``nurture serve`` wraps it (``runtime.server_config`` -> uvicorn's
``ProxyHeadersMiddleware`` when proxies are trusted); the TCP peer is set per client.
"""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from sqlalchemy import select
from starlette.testclient import TestClient

from nurture.clock import VirtualClock
from nurture.config import Settings
from nurture.pack import DEFAULTS_DIR
from nurture.runtime import server_config
from nurture.schema.tables import events
from nurture.storage import api_keys
from nurture.testing import Harness, brevo_request, harness, new_secret, signed_json

SECRET = new_secret()
BREVO = "brevo-token-for-address-tests"
PROXY = "10.0.0.7"


@pytest.fixture
def automation(tmp_path: Path) -> Path:
    """The default pack, with Brevo accepting only 203.0.113.0/24."""
    folder = tmp_path / "automation"
    shutil.copytree(DEFAULTS_DIR, folder)
    sources = folder / "sources.yaml"
    text = sources.read_text()
    assert "    ip_allowlist: []\n" in text
    sources.write_text(
        text.replace("    ip_allowlist: []\n", "    ip_allowlist: [203.0.113.0/24]\n")
    )
    return folder


@pytest.fixture
def h(
    make_settings: Callable[..., Settings], clock: VirtualClock, automation: Path
) -> Iterator[Harness]:
    settings = make_settings(
        track_secret=SECRET, brevo_webhook_token=BREVO, automation_dir=automation
    )
    with harness(settings, clock) as hh:
        yield hh


def client(h: Harness, peer: str, trusted: list[str]) -> TestClient:
    """A client connecting from ``peer`` to the app as the server would run it."""
    config = server_config(h.app, "127.0.0.1", 8000, trusted_proxies=trusted)
    config.load()
    # Not entered as a context manager: the harness already ran the app's lifespan.
    return TestClient(config.loaded_app, client=(peer, 40000), base_url="http://nurture.test")


def post_track(c: TestClient, h: Harness, headers: dict[str, str] | None = None) -> Any:
    event = {"id": uuid.uuid4().hex, "type": "page.viewed", "contact": {"email": "a@b.co"}}
    body, signed = signed_json(SECRET, event, h.clock.now())
    return c.post("/webhooks/track", content=body, headers={**signed, **(headers or {})})


def recorded(h: Harness, event_id: int) -> str | None:
    with h.container.db.read() as conn:
        value: str | None = conn.execute(
            select(events.c.client_addr).where(events.c.id == event_id)
        ).scalar_one()
    return value


def test_the_tcp_peer_is_recorded_with_each_delivery(h: Harness) -> None:
    r = post_track(client(h, "198.51.100.9", []), h)
    assert r.status_code == 202, r.text
    assert recorded(h, r.json()["event_ids"][0]) == "198.51.100.9"


def test_by_default_a_client_cannot_choose_its_address(h: Harness) -> None:
    # Nobody is trusted by default, not even 127.0.0.1 (uvicorn's own default).
    for peer in ("198.51.100.9", "127.0.0.1"):
        c = client(h, peer, [])
        r = post_track(c, h, {"x-forwarded-for": "203.0.113.5", "x-forwarded-proto": "https"})
        assert r.status_code == 202, r.text
        assert recorded(h, r.json()["event_ids"][0]) == peer


def test_an_untrusted_peer_sending_forwarded_headers_is_not_believed(h: Harness) -> None:
    c = client(h, "198.51.100.9", [PROXY])
    r = post_track(c, h, {"x-forwarded-for": "203.0.113.5"})
    assert recorded(h, r.json()["event_ids"][0]) == "198.51.100.9"


def test_a_trusted_proxy_reports_the_client(h: Harness) -> None:
    c = client(h, PROXY, ["10.0.0.0/24"])
    r = post_track(c, h, {"x-forwarded-for": "203.0.113.5"})
    assert recorded(h, r.json()["event_ids"][0]) == "203.0.113.5"
    # A client's own X-Forwarded-For forwarded (appended to) by the proxy: the right-most
    # address the trusted proxy added wins over what the client wrote in front of it.
    r = post_track(c, h, {"x-forwarded-for": "6.6.6.6, 203.0.113.8"})
    assert recorded(h, r.json()["event_ids"][0]) == "203.0.113.8"


def test_scheme_comes_from_a_trusted_proxy_only(h: Harness) -> None:
    # A trailing slash redirects to an absolute URL built from the request's scheme.
    def location(c: TestClient) -> str:
        r = c.post(
            "/webhooks/track/",
            content=b"{}",
            follow_redirects=False,
            headers={"x-forwarded-proto": "https"},
        )
        assert r.status_code == 307, r.text
        return str(r.headers["location"])

    assert location(client(h, PROXY, [PROXY])).startswith("https://nurture.test/")
    assert location(client(h, "198.51.100.9", [PROXY])).startswith("http://nurture.test/")


def test_source_ip_allowlist_uses_the_resolved_address(h: Harness) -> None:
    def post_brevo(c: TestClient, headers: dict[str, str]) -> Any:
        body, auth = brevo_request(
            BREVO,
            {
                "event": "delivered",
                "email": "a@b.co",
                "message-id": "<m1@x>",
                "ts_epoch": 1795424400123,
            },
        )
        return c.post("/webhooks/brevo", content=body, headers={**auth, **headers})

    # Behind the proxy the proxy's own address is not Brevo's: the client's is checked.
    behind = client(h, PROXY, [PROXY])
    assert post_brevo(behind, {"x-forwarded-for": "198.51.100.9"}).status_code == 403
    r = post_brevo(behind, {"x-forwarded-for": "203.0.113.20"})
    assert r.status_code == 202, r.text
    assert recorded(h, r.json()["event_ids"][0]) == "203.0.113.20"
    # A direct client claiming an allowed address is refused.
    direct = client(h, "198.51.100.9", [PROXY])
    assert post_brevo(direct, {"x-forwarded-for": "203.0.113.20"}).status_code == 403


def test_the_events_api_records_the_resolved_address(h: Harness) -> None:
    with h.container.db.begin() as conn:
        api_keys.create(conn, "address-test", "nk_address_test_key", h.clock.now())
    event = {"id": "api-1", "type": "custom.thing", "contact": {"email": "a@b.co"}}
    r = client(h, PROXY, [PROXY]).post(
        "/api/v1/events",
        content=orjson.dumps(event),
        headers={
            "authorization": "Bearer nk_address_test_key",
            "content-type": "application/json",
            "x-forwarded-for": "203.0.113.44",
        },
    )
    assert r.status_code == 202, r.text
    assert recorded(h, r.json()["event_ids"][0]) == "203.0.113.44"
