"""A Standard Webhooks sender declared in the automation folder, signed by ``standardwebhooks``."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from standardwebhooks.webhooks import Webhook

from nurture.errors import ConfigError
from nurture.testing import Harness, new_secret
from tests.e2e.sources.conftest import assert_problem, only, process_all, stored

SECRET = new_secret()
PACK = """
sources:
  - type: generic
    id: acme-crm
    secret_env: NURTURE_ACME_WEBHOOK_SECRET
    mapping:
      type: event
      occurred_at: at
      data: body
      contact:
        email: body.customer.email
        identities: {acme_id: body.customer.id}
        traits: {first_name: body.customer.first_name}
      types: {deal.won: purchase.completed}
      keep_types: true
"""


@pytest.fixture
def g(make_harness: Callable[..., Harness], tmp_path: Path) -> Harness:
    (tmp_path / "sources.yaml").write_text(PACK)
    return make_harness(
        automation_dir=tmp_path, extra_secrets={"NURTURE_ACME_WEBHOOK_SECRET": SECRET}
    )


def post(
    h: Harness,
    body: Any,
    *,
    when: datetime | None = None,
    secret: str = SECRET,
    msg_id: str | None = None,
) -> Any:
    raw = orjson.dumps(body)
    when = when or h.clock.now()
    msg_id = msg_id or f"msg_{uuid.uuid4().hex}"
    headers = {
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(when.timestamp())),
        "webhook-signature": Webhook(secret).sign(msg_id, when, raw.decode()),
        "content-type": "application/json",
    }
    return h.client.post("/webhooks/generic/acme-crm", content=raw, headers=headers)


def deal(event: str = "deal.won") -> dict[str, Any]:
    return {
        "event": event,
        "at": "2026-11-23T08:00:00+01:00",
        "body": {
            "amount": 120,
            "customer": {"id": 7, "email": "ann@example.com", "first_name": "Ann"},
        },
    }


def test_mapped_type_contact_and_time(g: Harness) -> None:
    assert post(g, deal(), msg_id="msg_a").status_code == 202
    row = only(g)
    assert row["type"] == "purchase.completed"
    assert row["source"] == "generic:acme-crm"
    assert row["occurred_at"] == datetime(2026, 11, 23, 7, 0, tzinfo=UTC)
    assert row["canonical"]["contact"] == {
        "email": "ann@example.com",
        "identities": {"acme_id": "7"},
        "traits": {"first_name": "Ann"},
    }
    assert row["canonical"]["data"]["amount"] == 120
    again = post(g, deal(), msg_id="msg_a")
    assert again.status_code == 200 and again.json()["status"] == "duplicate"


def test_kept_and_prefixed_types(g: Harness) -> None:
    assert post(g, deal("lead.created")).status_code == 202
    assert post(g, deal("Weird Thing")).status_code == 202
    assert [r["type"] for r in stored(g)] == ["lead.created", "acme_crm.weird_thing"]


def test_unhappy_paths(g: Harness, make_harness: Callable[..., Harness], tmp_path: Path) -> None:
    now = g.clock.now()
    assert_problem(post(g, deal(), when=now - timedelta(minutes=10)), 401, "window")
    assert_problem(post(g, deal(), secret=new_secret()), 401)
    assert_problem(post(g, {"body": {}}), 422, "event")
    r = g.client.post(
        "/webhooks/generic/unknown", content=b"{}", headers={"content-type": "application/json"}
    )
    assert_problem(r, 404, "not configured")
    off = make_harness(automation_dir=tmp_path)
    assert_problem(post(off, deal()), 404, "NURTURE_ACME_WEBHOOK_SECRET")
    assert stored(g) == []


def test_config_errors_name_file_line_and_field(
    make_harness: Callable[..., Harness], tmp_path: Path
) -> None:
    (tmp_path / "sources.yaml").write_text(
        "sources:\n  - type: generic\n    id: acme\n    secret_env: lower_case\n"
    )
    with pytest.raises(ConfigError, match=r"sources.yaml:4: 0.secret_env"):
        make_harness(automation_dir=tmp_path)
    (tmp_path / "sources.yaml").write_text(
        "sources:\n  - type: mailchimp\n    secret_env: NURTURE_X\n"
    )
    with pytest.raises(ConfigError, match=r"sources.yaml:2: sources.0.type: must be one of"):
        make_harness(automation_dir=tmp_path)


def test_missing_tampered_and_wrong_content_type(g: Harness) -> None:
    raw = orjson.dumps(deal())
    r = g.client.post(
        "/webhooks/generic/acme-crm", content=raw, headers={"content-type": "application/json"}
    )
    assert_problem(r, 401, "missing signature headers")
    when = g.clock.now()
    headers = {
        "webhook-id": "msg_t",
        "webhook-timestamp": str(int(when.timestamp())),
        "webhook-signature": Webhook(SECRET).sign("msg_t", when, raw.decode()),
        "content-type": "application/json",
    }
    tampered = raw.replace(b"120", b"999")
    r = g.client.post("/webhooks/generic/acme-crm", content=tampered, headers=headers)
    assert_problem(r, 401, "does not match")
    r = g.client.post(
        "/webhooks/generic/acme-crm", content=raw, headers={**headers, "content-type": "text/csv"}
    )
    assert_problem(r, 415)
    assert stored(g) == []


def test_rotated_secret(make_harness: Callable[..., Harness], tmp_path: Path) -> None:
    (tmp_path / "sources.yaml").write_text(PACK)
    old, new = new_secret(), new_secret()
    during = make_harness(
        automation_dir=tmp_path, extra_secrets={"NURTURE_ACME_WEBHOOK_SECRET": f"{old} {new}"}
    )
    assert post(during, deal(), secret=old).status_code == 202
    assert post(during, deal(), secret=new).status_code == 202
    after = make_harness(
        automation_dir=tmp_path, extra_secrets={"NURTURE_ACME_WEBHOOK_SECRET": new}
    )
    assert_problem(post(after, deal(), secret=old), 401, "does not match")
    assert post(after, deal(), secret=new).status_code == 202


def test_payload_without_a_usable_contact_is_stored_unattributed(g: Harness) -> None:
    body = deal()
    body["body"]["customer"] = {"email": "not an address"}
    assert post(g, body).status_code == 202
    row = only(g)
    assert row["type"] == "purchase.completed"
    assert row["canonical"]["contact"] is None
    process_all(g)
