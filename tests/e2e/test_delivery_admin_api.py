"""Admin API and CLI for delivery: messages, suppressions, re-subscribe, re-enabling endpoints."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from nurture.cli.main import app as cli
from nurture.clock import VirtualClock
from nurture.config import Settings
from nurture.contacts import suppression
from nurture.storage import api_keys
from nurture.storage import contacts as contact_store
from nurture.storage import endpoints as endpoint_store
from nurture.storage import messages as message_store
from nurture.storage import timeline as timeline_store
from nurture.testing import Harness, harness, new_secret
from tests.e2e.conftest import API_KEY, AUTH

ENDPOINTS = """\
endpoints:
  - name: flow
    url: https://flows.example.com/hook
    secret: {secret}
    events: [task.created]
"""


@pytest.fixture
def automation(tmp_path: Path) -> Path:
    folder = tmp_path / "automation"
    folder.mkdir()
    (folder / "endpoints.yaml").write_text(ENDPOINTS.format(secret=new_secret()), "utf-8")
    return folder


@pytest.fixture
def h(
    make_settings: Callable[..., Settings], clock: VirtualClock, automation: Path
) -> Iterator[Harness]:
    with harness(make_settings(automation_dir=automation), clock) as hh:
        with hh.container.db.begin() as conn:
            api_keys.create(conn, "support", API_KEY, clock.now())
        yield hh


def message(h: Harness, key: str, contact_id: int, status: str) -> int:
    values = {
        "key": key,
        "channel": "email",
        "provider": "smtp",
        "contact_id": contact_id,
        "to_address": "ann@example.com",
        "template": "thank_you",
        "transactional": False,
        "rule_id": "purchase",
        "step_id": None,
    }
    with h.container.db.begin() as conn:
        message_id = message_store.record(conn, values, status, h.clock.now())
    assert message_id is not None
    return message_id


def get(h: Harness, path: str, **params: Any) -> Any:
    r = h.client.get(path, params=params, headers=AUTH)
    assert r.status_code == 200, r.text
    return r.json()


def test_every_delivery_route_needs_a_key(h: Harness) -> None:
    for method, path in [
        ("GET", "/api/v1/messages"),
        ("GET", "/api/v1/messages/1"),
        ("GET", "/api/v1/suppressions"),
        ("POST", "/api/v1/contacts/1/resubscribe"),
        ("POST", "/api/v1/endpoints/flow/enable"),
    ]:
        assert h.client.request(method, path).status_code == 401
        bad = {"authorization": "Bearer nope"}
        assert h.client.request(method, path, headers=bad).status_code == 401


def test_messages_by_contact_and_status_with_cursor(h: Harness) -> None:
    with h.container.db.begin() as conn:
        ann = contact_store.create(conn, "ann@example.com", h.clock.now()).id
        bob = contact_store.create(conn, "bob@example.com", h.clock.now()).id
    first = message(h, "rule:1:purchase:1", ann, "sent")
    second = message(h, "rule:2:purchase:1", ann, "suppressed")
    message(h, "rule:3:purchase:1", bob, "sent")

    by_email = get(h, "/api/v1/messages", contact="ANN@example.com")
    assert [m["id"] for m in by_email["items"]] == [second, first]  # newest first
    assert get(h, "/api/v1/messages", contact=str(ann)) == by_email
    sent = get(h, "/api/v1/messages", contact="ann@example.com", status="sent")["items"]
    assert [m["key"] for m in sent] == ["rule:1:purchase:1"]
    page = get(h, "/api/v1/messages", limit=2)
    assert len(page["items"]) == 2 and page["next_before"] == page["items"][-1]["id"]
    rest = get(h, "/api/v1/messages", limit=2, before=page["next_before"])
    assert [m["id"] for m in rest["items"]] == [first] and rest["next_before"] is None

    one = get(h, f"/api/v1/messages/{first}")
    assert one["status"] == "sent" and one["rule_id"] == "purchase" and one["contact_id"] == ann
    assert h.client.get("/api/v1/messages/999999", headers=AUTH).status_code == 404
    r = h.client.get("/api/v1/messages", params={"status": "lost"}, headers=AUTH)
    assert r.status_code == 422
    r = h.client.get("/api/v1/messages", params={"contact": "nobody@example.com"}, headers=AUTH)
    assert r.status_code == 404


def test_resubscribe_lifts_suppressions_and_notes_it(h: Harness) -> None:
    now = h.clock.now()
    with h.container.db.begin() as conn:
        ann = contact_store.create(conn, "ann@example.com", now)
        other = contact_store.create(conn, "bob@example.com", now)
        for reason in ("unsubscribed", "complained"):
            suppression.suppress(conn, ann, reason, now)
        suppression.suppress(conn, other, "unsubscribed", now)
        ann.status = "complained"
        contact_store.save(conn, ann, now)

    listed = get(h, "/api/v1/suppressions")["items"]
    assert sorted(s["reason"] for s in listed) == ["complained", "unsubscribed", "unsubscribed"]
    mine = get(h, "/api/v1/suppressions", contact="ann@example.com", reason="complained")
    assert [(s["contact_id"], s["reason"]) for s in mine["items"]] == [(ann.id, "complained")]
    assert len(mine["items"][0]["email_hash"]) == 64

    r = h.client.post("/api/v1/contacts/ann@example.com/resubscribe", headers=AUTH)
    assert r.status_code == 200, r.text
    assert r.json() == {
        "contact_id": ann.id,
        "status": "subscribed",
        "previous_status": "complained",
        "lifted": ["complained", "unsubscribed"],
        "by": "api:support",
    }
    with h.container.db.read() as conn:
        after = contact_store.load(conn, ann.id)
        note = timeline_store.for_contact(conn, ann.id)[0]
        assert suppression.check(conn, ann.id, ann.email, transactional=False) is None
        assert suppression.check(conn, other.id, other.email, transactional=False) is not None
    assert after is not None and after.status == "subscribed"
    assert note["kind"] == "contact.resubscribed" and note["detail"]["by"] == "api:support"
    remaining = get(h, "/api/v1/suppressions")["items"]
    assert [s["contact_id"] for s in remaining] == [other.id]
    r = h.client.post("/api/v1/contacts/999999/resubscribe", headers=AUTH)
    assert r.status_code == 404


def test_enable_a_disabled_endpoint_by_api_and_cli(
    h: Harness, automation: Path, database_url: str
) -> None:
    with h.container.db.begin() as conn:
        endpoint_store.set_disabled(conn, "flow", "answered 410 Gone", h.clock.now())
    r = h.client.post("/api/v1/endpoints/flow/enable", headers=AUTH)
    assert r.json() == {"name": "flow", "enabled": True, "was_disabled": True}
    with h.container.db.read() as conn:
        assert endpoint_store.disabled(conn, "flow") is None
    again = h.client.post("/api/v1/endpoints/flow/enable", headers=AUTH).json()
    assert again["was_disabled"] is False
    assert h.client.post("/api/v1/endpoints/nope/enable", headers=AUTH).status_code == 404

    with h.container.db.begin() as conn:
        endpoint_store.set_disabled(conn, "flow", "answered 410 Gone", h.clock.now())
    env = {"NURTURE_DATABASE_URL": database_url, "NURTURE_AUTOMATION_DIR": str(automation)}
    runner = CliRunner()
    done = runner.invoke(cli, ["endpoints", "enable", "flow"], env=env)
    assert done.exit_code == 0, done.output
    assert "enabled again" in done.output
    with h.container.db.read() as conn:
        assert endpoint_store.disabled(conn, "flow") is None
    unknown = runner.invoke(cli, ["endpoints", "enable", "nope"], env=env)
    assert unknown.exit_code == 1
