"""The webhook routes' lean path in front of FastAPI: the same answers, one log line each."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from sqlalchemy import func, select
from starlette.testclient import TestClient

from nurture.bootstrap import Container, build_container
from nurture.clock import VirtualClock
from nurture.config import Settings
from nurture.intake.ingest import IngestOutcome
from nurture.schema.tables import events
from nurture.testing import signed_json
from nurture.web.app import NurtureApp, create_app
from nurture.web.state import WebState
from nurture.web.webhooks import Delivery
from tests.e2e.conftest import TRACK_SECRET

EVENT = {"type": "page.viewed", "contact": {"email": "a@b.co"}, "data": {"url": "/x"}}


@pytest.fixture
def container(make_settings: Callable[..., Settings], clock: VirtualClock) -> Iterator[Container]:
    c = build_container(make_settings(track_secret=TRACK_SECRET), clock=clock)
    yield c
    c.close()


@pytest.fixture
def app(container: Container) -> NurtureApp:
    return create_app(container)  # with its access log, as `nurture serve` runs it


def stored(container: Container) -> int:
    with container.db.read() as conn:
        return int(conn.execute(select(func.count()).select_from(events)).scalar_one())


def requests_logged(caplog: pytest.LogCaptureFixture) -> list[dict[str, Any]]:
    return [
        {k: getattr(r, k) for k in ("method", "path", "status")}
        for r in caplog.records
        if getattr(r, "action", None) == "http.request"
    ]


def test_each_webhook_request_writes_one_access_line(
    app: NurtureApp, container: Container, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="nurture.http")
    with TestClient(app) as client:
        body, headers = signed_json(TRACK_SECRET, {**EVENT, "id": "e1"}, container.clock.now())
        assert client.post("/webhooks/track", content=body, headers=headers).status_code == 202
        assert client.post("/webhooks/track", content=body, headers=headers).status_code == 200
        assert client.post("/webhooks/track", content=b"{}", headers={}).status_code == 401
        assert client.get("/healthz").status_code == 200  # through FastAPI: logged there
    assert requests_logged(caplog) == [
        {"method": "POST", "path": "/webhooks/track", "status": 202},
        {"method": "POST", "path": "/webhooks/track", "status": 200},
        {"method": "POST", "path": "/webhooks/track", "status": 401},
        {"method": "GET", "path": "/healthz", "status": 200},
    ]


def test_other_methods_and_paths_answer_as_through_the_router(app: NurtureApp) -> None:
    with TestClient(app) as client:
        r = client.get("/webhooks/track")
        assert r.status_code == 405
        assert r.headers["content-type"] == "application/problem+json"
        pre = client.options("/webhooks/forms/christmas-assessment")
        assert pre.status_code == 204
        assert "POST" in pre.headers["access-control-allow-methods"]
        assert client.post("/webhooks/forms/a/b", content=b"{}").status_code == 404
        assert client.post("/webhooks/forms/", content=b"{}").status_code == 404
        nowhere = client.post("/webhooks/forms/nope", content=b"{}")
        assert nowhere.status_code == 404 and "nope" in nowhere.json()["detail"]


def test_a_trailing_slash_is_redirected_by_the_router(
    app: NurtureApp, container: Container
) -> None:
    with TestClient(app) as client:
        body, headers = signed_json(TRACK_SECRET, EVENT, container.clock.now())
        r = client.post("/webhooks/track/", content=body, headers=headers, follow_redirects=False)
        assert r.status_code in (307, 308)
        assert r.headers["location"].endswith("/webhooks/track")


def test_a_bug_in_a_handler_is_a_500_problem(
    app: NurtureApp, caplog: pytest.LogCaptureFixture
) -> None:
    async def broken(st: WebState, d: Delivery) -> IngestOutcome:
        raise RuntimeError("a bug")

    assert app.intake is not None
    app.intake.post("/webhooks/broken", broken)
    caplog.set_level(logging.INFO, logger="nurture.http")
    with TestClient(app, raise_server_exceptions=False) as client:
        r = client.post("/webhooks/broken", content=b"{}")
    assert r.status_code == 500
    assert r.headers["content-type"] == "application/problem+json"
    assert "a bug" not in r.text  # no internals in the answer
    assert requests_logged(caplog) == [
        {"method": "POST", "path": "/webhooks/broken", "status": 500}
    ]


def test_a_client_gone_before_its_body_arrived_gets_no_answer_and_stores_nothing(
    app: NurtureApp, container: Container, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="nurture.http")
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "method": "POST",
        "path": "/webhooks/track",
        "root_path": "",
        "query_string": b"",
        "headers": [(b"content-type", b"application/json")],
    }
    asyncio.run(app(scope, receive, send))
    assert sent == []
    assert stored(container) == 0
    assert requests_logged(caplog) == [{"method": "POST", "path": "/webhooks/track", "status": 499}]
