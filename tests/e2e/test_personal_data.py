"""GDPR through the admin API: export, erase, the address staying suppressed; and the audit log
of every admin API change."""

from __future__ import annotations

import io
from typing import Any

from nurture.commerce.imports import import_contacts
from nurture.storage import api_keys, audit
from nurture.storage import contacts as contact_store
from nurture.testing import Harness, signed_json
from tests.e2e.conftest import AUTH, TRACK_SECRET

ANN = "ann@shop.fr"


def send(h: Harness, payload: Any) -> list[int]:
    body, headers = signed_json(TRACK_SECRET, payload, h.clock.now())
    r = h.client.post("/webhooks/track", content=body, headers=headers)
    assert r.status_code == 202, r.text
    ids: list[int] = r.json()["event_ids"]
    return ids


def entries(h: Harness) -> list[dict[str, Any]]:
    with h.container.db.read() as conn:
        return list(reversed(audit.recent(conn, limit=100)))


def test_export_then_erase_through_the_api(h: Harness) -> None:
    send(
        h,
        [
            {
                "type": "page.viewed",
                "contact": {"email": ANN, "first_name": "Annick", "client_code": "C-77"},
                "data": {"url": "https://shop.fr/?who=ann@shop.fr"},
            },
        ],
    )
    h.process()
    cid = h.client.get(f"/api/v1/contacts/{ANN}", headers=AUTH).json()["id"]

    export = h.client.get(f"/api/v1/contacts/{ANN}/export", headers=AUTH)
    assert export.status_code == 200
    data = export.json()
    assert data["contact"]["first_name"] == "Annick"
    [event] = [e for e in data["events"] if e["type"] == "page.viewed"]
    assert {e["type"] for e in data["events"]} >= {"contact.created"}  # derived ones too
    assert event["canonical"]["data"]["url"].endswith("ann@shop.fr")
    assert "ann@shop.fr" in event["raw"]  # the body as received
    assert any(t["kind"] == "contact.created" for t in data["timeline"])

    r = h.client.delete(f"/api/v1/contacts/{cid}", headers=AUTH)
    assert r.status_code == 200, r.text
    assert (
        r.json()["events_redacted"] == len(data["events"]) and r.json()["deleted"]["contacts"] == 1
    )
    assert h.client.get(f"/api/v1/contacts/{cid}", headers=AUTH).status_code == 404
    detail = h.client.get(f"/api/v1/events/{event['id']}", headers=AUTH).json()
    assert detail["raw"] is None and detail["canonical"]["data"] == {}
    assert h.client.delete(f"/api/v1/contacts/{cid}", headers=AUTH).status_code == 404

    actions = [(e["action"], e["actor"], e["target_id"]) for e in entries(h)]
    assert actions == [
        ("contact.export", "key:e2e", str(cid)),
        ("contact.erase", "key:e2e", str(cid)),  # once: the use case wrote it, not the middleware
        ("DELETE /api/v1/contacts/{ref}", "key:e2e", str(cid)),  # the refused second erase
    ]
    assert entries(h)[-1]["detail"] == {
        "path": f"/api/v1/contacts/{cid}",
        "status": 404,
        "outcome": "refused",
    }
    assert entries(h)[0]["client_addr"] == "testclient"

    # A later webhook re-creates the contact: it starts suppressed, by the address hash.
    send(h, {"type": "page.viewed", "contact": {"email": ANN}})
    h.process()
    again = h.client.get(f"/api/v1/contacts/{ANN}", headers=AUTH).json()
    assert again["status"] == "unsubscribed"  # SQLite may hand out the same id again
    # So does an import of the address.
    h.client.delete(f"/api/v1/contacts/{again['id']}", headers=AUTH)
    csv = f"email,first_name\n{ANN},Annick\nnew@shop.fr,New\n".encode()
    import_contacts(h.container.db, io.BytesIO(csv), h.clock.now())
    with h.container.db.read() as conn:
        imported = contact_store.load_by_email(conn, ANN)
        fresh = contact_store.load_by_email(conn, "new@shop.fr")
    assert imported is not None and imported.status == "unsubscribed"
    assert fresh is not None and fresh.status == "subscribed"


def test_every_admin_change_is_audited_and_refusals_are_not_recorded_as_done(
    h: Harness,
) -> None:
    [eid] = send(h, {"type": "page.viewed", "contact": {"email": ANN}})
    h.process()
    with h.container.db.begin() as conn:
        api_keys.create(conn, "zapier", "nk_second_key", h.clock.now())

    assert h.client.post(f"/api/v1/events/{eid}/replay", headers=AUTH).status_code == 202
    other = {"authorization": "Bearer nk_second_key"}
    assert h.client.post("/api/v1/jobs/424242/retry", headers=other).status_code == 404
    unauthenticated = h.client.post(f"/api/v1/events/{eid}/replay")
    assert unauthenticated.status_code == 401
    bad_key = h.client.post(f"/api/v1/events/{eid}/replay", headers={"authorization": "Bearer x"})
    assert bad_key.status_code == 401
    invalid = h.client.post(f"/api/v1/events/{eid}x/replay", headers=AUTH)
    assert invalid.status_code == 422
    # Reads and event intake are not changes a person made.
    assert h.client.get("/api/v1/contacts", headers=AUTH).status_code == 200
    r = h.client.post("/api/v1/events", json={"type": "page.viewed"}, headers=AUTH)
    assert r.status_code in (202, 422)

    got = [
        (e["actor"], e["action"], e["target_kind"], e["target_id"], e["detail"]["outcome"])
        for e in entries(h)
    ]
    assert got == [
        ("key:e2e", "POST /api/v1/events/{event_id}/replay", "events", str(eid), "done"),
        ("key:zapier", "POST /api/v1/jobs/{job_id}/retry", "jobs", "424242", "refused"),
        ("key:e2e", "POST /api/v1/events/{event_id}/replay", "events", f"{eid}x", "refused"),
    ]
    assert [e["detail"]["status"] for e in entries(h)] == [202, 404, 422]
