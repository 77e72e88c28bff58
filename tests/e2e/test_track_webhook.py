"""``POST /webhooks/track`` and the prototype routes over the ASGI app, every answer of SPEC §1."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

import orjson
import pytest
from sqlalchemy import func, select

from nurture.config import Settings
from nurture.schema.tables import events
from nurture.testing import Harness, harness, new_secret, signed_json
from tests.e2e.conftest import TRACK_SECRET, WRITE_KEY

EVENT = {"type": "page.viewed", "contact": {"email": "a@b.co"}, "data": {"url": "/x"}}


def stored(h: Harness) -> int:
    with h.container.db.read() as conn:
        return int(conn.execute(select(func.count()).select_from(events)).scalar_one())


def post_signed(h: Harness, payload: Any, **kw: Any) -> Any:
    body, headers = signed_json(TRACK_SECRET, payload, h.clock.now(), **kw)
    return h.client.post("/webhooks/track", content=body, headers=headers)


def assert_problem(r: Any, status: int, needle: str) -> dict[str, Any]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = r.json()
    assert body["status"] == status
    assert needle in body["detail"]
    return body


def test_accepted_then_duplicate_on_redelivery(h: Harness) -> None:
    body, headers = signed_json(TRACK_SECRET, {**EVENT, "id": "evt-1"}, h.clock.now())
    first = h.client.post("/webhooks/track", content=body, headers=headers)
    assert first.status_code == 202
    # A retry re-signs with a new timestamp; the sender's event id dedupes it.
    h.clock.advance(timedelta(seconds=30))
    again = post_signed(h, {**EVENT, "id": "evt-1"})
    assert again.status_code == 200
    assert again.json() == {"status": "duplicate", "event_ids": first.json()["event_ids"]}
    assert stored(h) == 1


def test_batch_array_accepted(h: Harness) -> None:
    items = [{**EVENT, "id": f"e{i}"} for i in range(5)]
    r = post_signed(h, items)
    assert r.status_code == 202 and len(r.json()["event_ids"]) == 5
    assert h.process() >= 5  # plus any derived events the default pack queues
    with h.container.db.read() as conn:
        done = conn.execute(
            select(func.count()).where(
                events.c.id.in_(r.json()["event_ids"]), events.c.status == "processed"
            )
        ).scalar_one()
    assert done == 5


def test_bad_signature_stale_timestamp_and_wrong_secret_are_401(h: Harness) -> None:
    body, headers = signed_json(TRACK_SECRET, EVENT, h.clock.now())
    headers["webhook-signature"] = "v1,AAAA" + headers["webhook-signature"][7:]
    assert_problem(h.client.post("/webhooks/track", content=body, headers=headers), 401, "match")
    body, headers = signed_json(TRACK_SECRET, EVENT, h.clock.now() - timedelta(minutes=10))
    assert_problem(h.client.post("/webhooks/track", content=body, headers=headers), 401, "window")
    body, headers = signed_json(new_secret(), EVENT, h.clock.now())
    assert_problem(h.client.post("/webhooks/track", content=body, headers=headers), 401, "match")
    body, headers = signed_json(TRACK_SECRET, EVENT, h.clock.now())
    tampered = body.replace(b"a@b.co", b"x@b.co")
    assert_problem(h.client.post("/webhooks/track", content=tampered, headers=headers), 401, "")
    r = h.client.post("/webhooks/track", content=body, headers={"content-type": "application/json"})
    assert_problem(r, 401, "missing")
    assert stored(h) == 0


def test_oversized_body_is_413_while_reading(h: Harness) -> None:
    big = orjson.dumps({**EVENT, "data": {"pad": "x" * (1024 * 1024)}})
    body, headers = signed_json(TRACK_SECRET, big, h.clock.now())

    def chunks() -> Any:  # no Content-Length: the limit must hold while streaming
        for i in range(0, len(body), 65536):
            yield body[i : i + 65536]

    assert_problem(h.client.post("/webhooks/track", content=chunks(), headers=headers), 413, "")
    assert_problem(h.client.post("/webhooks/track", content=body, headers=headers), 413, "limit")
    assert stored(h) == 0


def test_wrong_content_type_is_415(h: Harness) -> None:
    body, headers = signed_json(TRACK_SECRET, EVENT, h.clock.now(), content_type="text/xml")
    assert_problem(h.client.post("/webhooks/track", content=body, headers=headers), 415, "text/xml")


def test_malformed_json_is_400(h: Harness) -> None:
    body, headers = signed_json(TRACK_SECRET, b'{"type": ', h.clock.now())
    assert_problem(h.client.post("/webhooks/track", content=body, headers=headers), 400, "JSON")


def test_array_over_the_limit_is_413(h: Harness) -> None:
    r = post_signed(h, [EVENT] * 6)
    assert_problem(r, 413, "at most 5")
    assert stored(h) == 0


def test_missing_contact_key_is_422_naming_the_field(h: Harness) -> None:
    r = post_signed(h, [EVENT, {"type": "page.viewed", "contact": {"first_name": "x"}}])
    body = assert_problem(r, 422, "[1].contact")
    assert body["errors"] == [{"field": "[1].contact", "message": "needs email or external_id"}]
    assert stored(h) == 0  # nothing of a refused request is half-stored


def test_write_key_allows_behaviour_events_only_with_cors(h: Harness) -> None:
    headers = {
        "content-type": "text/plain",
        "x-nurture-write-key": WRITE_KEY,
        "origin": "https://shop.example",
    }
    r = h.client.post("/webhooks/track", content=orjson.dumps(EVENT), headers=headers)
    assert r.status_code == 202
    assert r.headers["access-control-allow-origin"] == "*"
    purchase = {**EVENT, "type": "purchase.completed", "data": {"amount": 99}}
    r = h.client.post("/webhooks/track", content=orjson.dumps(purchase), headers=headers)
    assert_problem(r, 403, "behaviour")
    assert r.headers["access-control-allow-origin"] == "*"
    r = h.client.post(
        "/webhooks/track?write_key=nope",
        content=orjson.dumps(EVENT),
        headers={"content-type": "application/json"},
    )
    assert_problem(r, 401, "unknown write key")
    pre = h.client.options("/webhooks/track", headers={"origin": "https://shop.example"})
    assert pre.status_code == 204
    assert "x-nurture-write-key" in pre.headers["access-control-allow-headers"]


def test_unconfigured_source_is_404(make_settings: Callable[..., Settings], clock: Any) -> None:
    with harness(make_settings(), clock) as bare:
        body, headers = signed_json(TRACK_SECRET, EVENT, clock.now())
        r = bare.client.post("/webhooks/track", content=body, headers=headers)
        assert_problem(r, 404, "NURTURE_TRACK_SECRET")


def test_prototype_behavior_route_and_health(h: Harness) -> None:
    payload = {"client_code": "C007", "action": "page_view", "metadata": {"url": "/vins"}}
    body, headers = signed_json(TRACK_SECRET, payload, h.clock.now())
    r = h.client.post("/webhook/behavior", content=body, headers=headers)
    assert r.status_code == 202
    h.process()
    with h.container.db.read() as conn:
        row = conn.execute(
            select(events.c.type, events.c.status).where(events.c.source == "track")
        ).one()
    assert tuple(row) == ("page.viewed", "processed")
    health = h.client.get("/webhook/health").json()
    assert health["status"] == "healthy" and health["timestamp"].startswith("2026-11-23")
    assert h.client.get("/healthz").json() == {"status": "ok"}
    assert h.client.get("/readyz").json()["status"] == "ready"


@pytest.mark.postgres
def test_database_down_is_503_and_sender_can_retry(
    make_settings: Callable[..., Settings], clock: Any
) -> None:
    settings = Settings(
        database_url="postgresql://nobody@127.0.0.1:1/none", track_secret=TRACK_SECRET
    )
    with harness(settings, clock) as down:
        body, headers = signed_json(TRACK_SECRET, EVENT, clock.now())
        r = down.client.post("/webhooks/track", content=body, headers=headers)
        assert_problem(r, 503, "database unavailable")
        assert r.headers["retry-after"] == "1"
        assert down.client.get("/readyz").status_code == 503


def test_locked_sqlite_is_503_then_retry_succeeds(sqlite_url: str, clock: Any) -> None:
    from nurture.database.engine import Database

    settings = Settings(database_url=sqlite_url, track_secret=TRACK_SECRET, db_busy_timeout_ms=50)
    blocker = Database(sqlite_url)
    with harness(settings, clock) as hh:
        body, headers = signed_json(TRACK_SECRET, EVENT, clock.now())
        with blocker.begin():
            r = hh.client.post("/webhooks/track", content=body, headers=headers)
            assert_problem(r, 503, "locked")
        assert hh.client.post("/webhooks/track", content=body, headers=headers).status_code == 202
        assert stored(hh) == 1
    blocker.dispose()
