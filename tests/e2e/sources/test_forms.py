"""Forms over the ASGI app: the Christmas assessment, signed (standardwebhooks) or with a write
key, JSON or urlencoded, camelCase spellings, every invalid field listed."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlencode

import orjson
from standardwebhooks.webhooks import Webhook

from nurture.testing import Harness, new_secret
from tests.e2e.sources.conftest import (
    FORMS_SECRET,
    WRITE_KEY,
    assert_problem,
    only,
    process_all,
    stored,
)

URL = "/webhooks/forms/christmas-assessment"
SUBMISSION = {
    "email": " Ann@Example.com ",
    "first_name": "Ann",
    "business_name": "Ann's Bakery",
    "assessment_score": 62,
    "red_systems": 2,
    "orange_systems": 1,
    "yellow_systems": 3,
    "green_systems": 2,
    "gps_score": 40,
    "money_score": 55,
    "weakest_system_1": "Cash flow",
    "weakest_system_2": "Hiring",
    "revenue_leak_total": 12000,
}


def signed(
    body: Any, when: datetime, secret: str = FORMS_SECRET, msg_id: str | None = None
) -> tuple[bytes, dict[str, str]]:
    raw = body if isinstance(body, bytes) else orjson.dumps(body)
    msg_id = msg_id or f"msg_{uuid.uuid4().hex}"
    return raw, {
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(when.timestamp())),
        "webhook-signature": Webhook(secret).sign(msg_id, when, raw.decode()),
        "content-type": "application/json",
    }


def post(h: Harness, body: Any, *, url: str = URL, **kw: Any) -> Any:
    raw, headers = signed(body, kw.pop("when", h.clock.now()), **kw)
    return h.client.post(url, content=raw, headers=headers)


def test_signed_submission_upserts_the_contact(h: Harness) -> None:
    r = post(h, SUBMISSION)
    assert r.status_code == 202, r.text
    row = only(h)
    assert row["type"] == "form.submitted" and row["source"] == "forms"
    canonical = row["canonical"]
    assert canonical["contact"] == {
        "email": "ann@example.com",
        "traits": {"first_name": "Ann", "business_name": "Ann's Bakery"},
    }
    consent = canonical["data"].pop("consent")  # the default pack declares its consent text
    assert canonical["data"] == {
        "form": "christmas-assessment",
        **SUBMISSION,
        "email": "ann@example.com",
    }
    assert consent["version"] == "2026-11" and consent["client_addr"] == "testclient"
    assert consent["double_opt_in"] is False and consent["fields"] == {}
    process_all(h)
    with h.container.db.read() as conn:
        from nurture.storage import contacts

        contact = contacts.load_by_email(conn, "ann@example.com")
    assert contact is not None
    assert contact.first_name == "Ann"
    assert contact.attributes["business_name"] == "Ann's Bakery"


def test_camel_case_urlencoded_with_write_key_and_defaults(h: Harness) -> None:
    fields = {
        "email": "bob@example.com",
        "firstName": "Bob",
        "assessmentScore": "70",
        "redSystems": "1",
        "gpsScore": "",
        "WeakestSystem1": "Sales",
        "TotalRevenueLeak": "-500",
        "unknown": "dropped",
    }
    r = h.client.post(
        URL + f"?write_key={WRITE_KEY}",
        content=urlencode(fields).encode(),
        headers={
            "content-type": "application/x-www-form-urlencoded",
            "origin": "https://site.example",
        },
    )
    assert r.status_code == 202, r.text
    assert r.headers["access-control-allow-origin"] == "*"
    data = only(h)["canonical"]["data"]
    assert data["first_name"] == "Bob"
    assert data["assessment_score"] == 70
    assert data["red_systems"] == 1
    assert data["orange_systems"] == 0  # default
    assert data["gps_score"] is None
    assert data["weakest_system_1"] == "Sales"
    assert data["revenue_leak_total"] == -500
    assert "unknown" not in data


def test_every_invalid_field_is_listed(h: Harness) -> None:
    bad = {
        "email": "nope",
        "assessment_score": 101,
        "red_systems": 9,
        "greenSystems": -1,
        "gps_score": "x",
    }
    body = assert_problem(post(h, bad), 422)
    fields = {e["field"]: e["message"] for e in body["errors"]}
    assert set(fields) == {
        "email",
        "first_name",
        "assessment_score",
        "red_systems",
        "green_systems",
        "gps_score",
    }
    assert fields["email"] == "is not a valid e-mail address"
    assert fields["first_name"] == "is required"
    assert stored(h) == []


def test_authentication_failures(h: Harness) -> None:
    now = h.clock.now()
    assert_problem(post(h, SUBMISSION, when=now - timedelta(minutes=6)), 401, "window")
    assert_problem(post(h, SUBMISSION, secret=new_secret()), 401, "does not match")
    raw, headers = signed(SUBMISSION, now)
    assert_problem(h.client.post(URL, content=raw.replace(b"62", b"99"), headers=headers), 401)
    r = h.client.post(URL, content=raw, headers={"content-type": "application/json"})
    assert_problem(r, 401, "missing signature or write key")
    r = h.client.post(
        URL,
        content=raw,
        headers={"content-type": "application/json", "x-nurture-write-key": "wk_bad"},
    )
    assert_problem(r, 401, "unknown write key")
    headers["content-type"] = "text/plain"
    assert_problem(h.client.post(URL, content=raw, headers=headers), 415)
    assert stored(h) == []


def test_duplicate_delivery_and_rotation(make_harness: Callable[..., Harness]) -> None:
    old = new_secret()
    h = make_harness(forms_secret=f"{old} {FORMS_SECRET}")
    assert post(h, SUBMISSION, secret=old, msg_id="msg_1").status_code == 202
    again = post(h, SUBMISSION, msg_id="msg_1")
    assert again.status_code == 200 and again.json()["status"] == "duplicate"
    after = make_harness(forms_secret=FORMS_SECRET)
    assert_problem(post(after, SUBMISSION, secret=old), 401)


def test_unknown_form_and_not_configured(make_harness: Callable[..., Harness]) -> None:
    h = make_harness()
    assert_problem(post(h, SUBMISSION, url="/webhooks/forms/nope"), 404, "no form 'nope'")
    off = make_harness(forms_secret="", write_keys="")
    assert_problem(post(off, SUBMISSION), 404, "NURTURE_FORMS_SECRET")


def test_prototype_route_is_the_same_form(h: Harness) -> None:
    assert post(h, SUBMISSION, url="/webhook/christmas-signup").status_code == 202
    assert only(h)["canonical"]["data"]["form"] == "christmas-assessment"
    r = h.client.post(
        "/webhook/christmas-signup",
        content=orjson.dumps(SUBMISSION),
        headers={"content-type": "application/json"},
    )
    assert_problem(r, 401)
