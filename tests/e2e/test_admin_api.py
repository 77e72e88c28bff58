"""The admin API: keys, contacts, timeline, events, replay, OpenAPI."""

from __future__ import annotations

from typing import Any

from nurture.testing import Harness, signed_json
from tests.e2e.conftest import AUTH, TRACK_SECRET


def send(h: Harness, payload: Any) -> list[int]:
    body, headers = signed_json(TRACK_SECRET, payload, h.clock.now())
    r = h.client.post("/webhooks/track", content=body, headers=headers)
    assert r.status_code == 202, r.text
    ids: list[int] = r.json()["event_ids"]
    return ids


def test_every_admin_route_needs_a_valid_key(h: Harness) -> None:
    for path in ("/api/v1/contacts", "/api/v1/events", "/api/v1/contacts/1"):
        r = h.client.get(path)
        assert r.status_code == 401 and r.headers["content-type"] == "application/problem+json"
        r = h.client.get(path, headers={"authorization": "Bearer nope"})
        assert r.status_code == 401


def test_contacts_search_get_timeline(h: Harness) -> None:
    send(
        h,
        [
            {"type": "page.viewed", "contact": {"email": "ann@shop.fr", "first_name": "Ann"}},
            {"type": "page.viewed", "contact": {"email": "bob@shop.fr", "client_code": "C9"}},
        ],
    )
    h.process()
    page = h.client.get("/api/v1/contacts", params={"query": "ann"}, headers=AUTH).json()
    assert [c["email"] for c in page["items"]] == ["ann@shop.fr"]
    page = h.client.get("/api/v1/contacts", params={"query": "C9"}, headers=AUTH).json()
    assert [c["email"] for c in page["items"]] == ["bob@shop.fr"]
    bob = h.client.get("/api/v1/contacts/BOB@shop.fr", headers=AUTH).json()
    assert bob["identities"] == {"client_code": "C9"}
    assert h.client.get(f"/api/v1/contacts/{bob['id']}", headers=AUTH).json() == bob
    r = h.client.get("/api/v1/contacts/nobody@shop.fr", headers=AUTH)
    assert r.status_code == 404
    tl = h.client.get(f"/api/v1/contacts/{bob['id']}/timeline", headers=AUTH).json()
    kinds = [i["kind"] for i in tl["items"]]
    assert kinds[-2:] == ["event", "contact.created"]  # newest first


def test_events_filter_detail_and_replay(h: Harness) -> None:
    [eid] = send(h, {"type": "link.clicked", "contact": {"email": "c@shop.fr"}})
    send(h, {"type": "page.viewed", "contact": {"email": "c@shop.fr"}})
    listed = h.client.get("/api/v1/events", params={"status": "pending"}, headers=AUTH).json()
    assert len(listed["items"]) == 2
    h.process()
    clicked = h.client.get("/api/v1/events", params={"type": "link.clicked"}, headers=AUTH).json()[
        "items"
    ]
    assert [e["id"] for e in clicked] == [eid] and clicked[0]["status"] == "processed"
    detail = h.client.get(f"/api/v1/events/{eid}", headers=AUTH).json()
    assert detail["canonical"]["type"] == "link.clicked" and detail["raw_encoding"] == "utf-8"
    r = h.client.post(f"/api/v1/events/{eid}/replay", headers=AUTH)
    assert r.status_code == 202
    assert h.client.get(f"/api/v1/events/{eid}", headers=AUTH).json()["status"] == "pending"
    assert h.process() == 1
    assert h.client.post("/api/v1/events/999999/replay", headers=AUTH).status_code == 404
    bad = h.client.get("/api/v1/events", params={"status": "weird"}, headers=AUTH)
    assert bad.status_code == 422 and "status" in bad.json()["detail"]


def test_openapi_lists_admin_routes(h: Harness) -> None:
    spec = h.client.get("/openapi.json").json()
    assert "/api/v1/contacts/{ref}" in spec["paths"]
    assert "/api/v1/events/{event_id}/replay" in spec["paths"]
