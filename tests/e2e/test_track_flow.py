"""Signed events in over the ASGI app, processed by the worker, read back through the admin API."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from nurture.clock import VirtualClock
from nurture.config import Settings
from nurture.storage import api_keys
from nurture.testing import Harness, harness, new_secret, signed_json

SECRET = new_secret()


@pytest.fixture
def h(make_settings: Callable[..., Settings], clock: VirtualClock) -> Iterator[Harness]:
    with harness(make_settings(track_secret=SECRET, write_keys="wk_test"), clock) as hh:
        with hh.container.db.begin() as conn:
            api_keys.create(conn, "test", "nk_test", clock.now())
        yield hh


AUTH = {"authorization": "Bearer nk_test"}


def test_signed_event_creates_contact_visible_in_api(h: Harness) -> None:
    payload = {
        "type": "page.viewed",
        "contact": {"email": " Ann@Example.COM ", "first_name": "Ann"},
        "data": {"url": "/pricing"},
    }
    body, headers = signed_json(SECRET, payload, h.clock.now())
    r = h.client.post("/webhooks/track", content=body, headers=headers)
    assert r.status_code == 202, r.text
    assert r.json()["status"] == "accepted"
    [event_id] = r.json()["event_ids"]

    assert h.process() >= 1
    contact = h.client.get("/api/v1/contacts/ann@example.com", headers=AUTH).json()
    assert contact["email"] == "ann@example.com"
    assert contact["first_name"] == "Ann"
    timeline = h.client.get(f"/api/v1/contacts/{contact['id']}/timeline", headers=AUTH).json()
    first = [item for item in timeline["items"] if item["event_id"] == event_id]
    kinds = [item["kind"] for item in reversed(first)]
    assert kinds[:2] == ["contact.created", "event"]
    event = h.client.get(f"/api/v1/events/{event_id}", headers=AUTH).json()
    assert event["status"] == "processed"
    assert event["raw"] == body.decode()
    assert event["canonical"]["data"] == {"url": "/pricing"}
