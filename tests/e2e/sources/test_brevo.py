"""Brevo over the ASGI app: real payload names, Bearer/Basic auth, batches, dedupe, old route."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from nurture.testing import Harness, brevo_request
from tests.e2e.sources.conftest import (
    BREVO_BASIC,
    BREVO_TOKEN,
    assert_problem,
    only,
    process_all,
    stored,
)

TS_MS = 1795424400123  # 2026-11-23T09:00:00.123Z


def tx(event: str, **extra: Any) -> dict[str, Any]:
    """A transactional event as Brevo documents it."""
    return {
        "event": event,
        "email": "Ann@Example.com",
        "id": 1234567,
        "date": "2026-11-23 10:00:00",
        "ts": 1795424400,
        "message-id": "<202611230900.11839465263@smtp-relay.mailin.fr>",
        "ts_event": 1795424400,
        "subject": "Welcome to nurture",
        "X-Mailin-custom": '{"nurture_message_id": "rule:17:welcome:0"}',
        "sending_ip": "185.41.28.109",
        "ts_epoch": TS_MS,
        "template_id": 7,
        "tags": ["welcome"],
        **extra,
    }


def post(h: Harness, payload: Any, token: str = BREVO_TOKEN, path: str = "/webhooks/brevo") -> Any:
    body, headers = brevo_request(token, payload)
    return h.client.post(path, content=body, headers=headers)


def test_each_kind_lands_once_with_canonical_fields(h: Harness) -> None:
    cases = [
        (tx("request"), "email.sent", {}),
        (tx("delivered"), "email.delivered", {}),
        (tx("deferred"), "email.deferred", {}),
        (tx("hard_bounce", reason="550 no such user"), "email.bounced", {"kind": "hard"}),
        (tx("soft_bounce", reason="mailbox full"), "email.bounced", {"kind": "soft"}),
        (tx("invalid_email"), "email.bounced", {"kind": "hard", "reason": "invalid_email"}),
        (tx("blocked"), "email.blocked", {}),
        (tx("spam"), "email.complained", {}),
        (tx("opened"), "email.opened", {"unique": False, "proxy": False}),
        (tx("unique_proxy_open"), "email.opened", {"unique": True, "proxy": True}),
        (
            tx("click", link="https://example.com/p"),
            "email.clicked",
            {"link": "https://example.com/p"},
        ),
        (tx("unsubscribed"), "email.unsubscribed", {}),
        (tx("error"), "email.failed", {}),
    ]
    for payload, event_type, expected in cases:
        r = post(h, payload)
        assert r.status_code == 202, r.text
        row = stored(h)[-1]
        assert row["type"] == event_type
        assert row["source"] == "brevo"
        data = row["canonical"]["data"]
        assert data["message_id"] == "rule:17:welcome:0"
        assert data["provider_message_id"] == payload["message-id"]
        assert data["custom"] == {"nurture_message_id": "rule:17:welcome:0"}
        for key, value in expected.items():
            assert data[key] == value, (event_type, key)
        assert row["canonical"]["contact"] == {"email": "ann@example.com"}
        assert row["occurred_at"] == datetime(2026, 11, 23, 9, 0, 0, 123000, tzinfo=UTC)
    assert len(stored(h)) == len(cases)


def test_retry_is_a_duplicate_and_stored_once(h: Harness) -> None:
    first = post(h, tx("click", link="https://example.com/a"))
    again = post(h, tx("click", link="https://example.com/a"))
    other_link = post(h, tx("click", link="https://example.com/b"))
    assert first.status_code == 202
    assert again.status_code == 200
    assert again.json() == {"status": "duplicate", "event_ids": first.json()["event_ids"]}
    assert other_link.status_code == 202
    assert len(stored(h)) == 2


def test_batched_array_and_marketing_payload(h: Harness) -> None:
    marketing = {
        "id": 98765,
        "camp_id": 42,
        "campaign name": "November news",
        "email": "bob@example.com",
        "date_sent": "2026-11-23 09:00:00",
        "date_event": "2026-11-23 09:05:00",
        "ts_sent": 1795424400,
        "ts_event": 1795424700,
        "ts": 1795424700,
        "event": "click",
        "URL": "https://example.com/offer",
        "tag": "",
    }
    r = post(h, [tx("delivered"), marketing])
    assert r.status_code == 202, r.text
    assert len(r.json()["event_ids"]) == 2
    first, second = stored(h)
    assert orjson.loads(first["raw"])["event"] == "delivered"
    assert second["type"] == "email.clicked"
    assert second["canonical"]["data"]["link"] == "https://example.com/offer"
    assert second["canonical"]["data"]["campaign_id"] == 42
    assert second["occurred_at"] == datetime(2026, 11, 23, 9, 5, tzinfo=UTC)


def test_basic_auth_and_rotation(h: Harness) -> None:
    assert post(h, tx("delivered"), token=BREVO_BASIC).status_code == 202
    assert post(h, tx("opened"), token=BREVO_TOKEN).status_code == 202
    assert_problem(post(h, tx("spam"), token="brevo:wrong-password"), 401, "do not match")
    assert_problem(post(h, tx("spam"), token="revoked-token-xyz"), 401, "do not match")


def test_removed_secret_is_refused(make_harness: Callable[..., Harness]) -> None:
    h = make_harness(brevo_webhook_token=BREVO_BASIC)
    assert_problem(post(h, tx("delivered"), token=BREVO_TOKEN), 401)
    assert post(h, tx("delivered"), token=BREVO_BASIC).status_code == 202


def test_missing_credentials_content_type_and_shape(h: Harness) -> None:
    body = orjson.dumps(tx("delivered"))
    r = h.client.post("/webhooks/brevo", content=body, headers={"content-type": "application/json"})
    assert_problem(r, 401, "missing Authorization")
    r = h.client.post(
        "/webhooks/brevo",
        content=body,
        headers={"authorization": f"Bearer {BREVO_TOKEN}", "content-type": "text/plain"},
    )
    assert_problem(r, 415)
    assert_problem(post(h, b"{not json"), 400, "not valid JSON")
    body422 = assert_problem(post(h, [tx("delivered"), {"email": "x@y.co"}]), 422)
    assert body422["errors"] == [{"field": "[1].event", "message": "is required"}]
    assert stored(h) == []


def test_unknown_event_is_stored_without_contact(h: Harness) -> None:
    r = post(h, {"event": "list_addition", "email": "ann@example.com", "ts_event": 1795424400})
    assert r.status_code == 202
    row = only(h)
    assert row["type"] == "brevo.list_addition"
    assert row["canonical"]["contact"] is None
    process_all(h)


def test_no_usable_recipient_is_stored_unattributed(h: Harness) -> None:
    r = post(h, tx("delivered", email="not-an-address"))
    assert r.status_code == 202
    row = only(h)
    assert row["canonical"]["contact"] is None
    assert row["canonical"]["data"]["recipient"] == "not-an-address"
    process_all(h)
    assert stored(h)[0]["status"] == "processed"


def test_not_configured_is_404(make_harness: Callable[..., Harness]) -> None:
    h = make_harness(brevo_webhook_token="")
    body = assert_problem(post(h, tx("delivered")), 404, "NURTURE_BREVO_WEBHOOK_TOKEN")
    assert BREVO_TOKEN not in str(body)


def test_ip_allowlist(make_harness: Callable[..., Harness], tmp_path: Path) -> None:
    (tmp_path / "sources.yaml").write_text(
        "sources:\n"
        "  - type: brevo\n"
        "    secret_env: NURTURE_BREVO_WEBHOOK_TOKEN\n"
        "    ip_allowlist: [1.179.112.0/20]\n"
    )
    h = make_harness(automation_dir=tmp_path)
    # the test client connects from "testclient", which is in no network
    assert_problem(post(h, tx("delivered")), 403, "allowlist")
    assert stored(h) == []


def test_prototype_route_accepts_old_and_real_names(h: Harness) -> None:
    old = {
        "event": "clicked",
        "email": "ann@example.com",
        "message-id": "m1",
        "ts_event": 1795424400,
        "link": "https://example.com",
    }
    assert post(h, old, path="/webhook/email").status_code == 202
    assert post(h, {**old, "event": "complaint"}, path="/webhook/email").status_code == 202
    assert post(h, tx("hard_bounce"), path="/webhook/email").status_code == 202
    assert [r["type"] for r in stored(h)] == ["email.clicked", "email.complained", "email.bounced"]
    # same rules as the modern route: no credentials, no entry
    r = h.client.post(
        "/webhook/email", content=orjson.dumps(old), headers={"content-type": "application/json"}
    )
    assert_problem(r, 401)
    # the modern route does not take the prototype's vocabulary as e-mail events
    assert post(h, {**old, "event": "clicked", "link": "https://x.co"}).status_code == 202
    assert stored(h)[-1]["type"] == "brevo.clicked"


def test_prototype_route_takes_its_whole_vocabulary(h: Harness) -> None:
    # the CRM prototype accepted exactly sent, opened, clicked, bounce, unsubscribed, complaint
    expected = {
        "sent": ("email.sent", {}),
        "opened": ("email.opened", {"unique": False, "proxy": False}),
        "clicked": ("email.clicked", {"link": "https://example.com/x"}),
        "bounce": ("email.bounced", {"kind": "hard"}),
        "unsubscribed": ("email.unsubscribed", {}),
        "complaint": ("email.complained", {}),
    }
    for n, (name, (event_type, fields)) in enumerate(expected.items()):
        old = {
            "event": name,
            "email": "Ann@Example.com",
            "message-id": f"<m{n}@smtp-relay.mailin.fr>",
            "ts_event": 1795424400 + n,
            "link": "https://example.com/x" if name == "clicked" else None,
        }
        r = post(h, old, path="/webhook/email")
        assert r.status_code == 202, (name, r.text)
        row = stored(h)[-1]
        assert row["type"] == event_type, name
        assert row["canonical"]["contact"] == {"email": "ann@example.com"}
        assert row["occurred_at"] == datetime.fromtimestamp(1795424400 + n, UTC)
        for key, value in fields.items():
            assert row["canonical"]["data"][key] == value, (name, key)
    # a retry of the prototype's payload is a duplicate there too
    again = post(
        h,
        {
            "event": "sent",
            "email": "Ann@Example.com",
            "message-id": "<m0@smtp-relay.mailin.fr>",
            "ts_event": 1795424400,
            "link": None,
        },
        path="/webhook/email",
    )
    assert again.status_code == 200 and again.json()["status"] == "duplicate"
    process_all(h)


def test_non_ascii_credentials_are_a_401(h: Harness) -> None:
    body = orjson.dumps(tx("delivered"))
    r = h.client.post(
        "/webhooks/brevo",
        content=body,
        headers={"authorization": b"Bearer caf\xe9", "content-type": "application/json"},
    )
    assert_problem(r, 401)
