"""The shipped nginx site (deploy/nginx/nurture.conf) in front of a real ``nurture serve``.

nginx is Debian's, run as a child with its own prefix and a throw-away certificate; the client
connects from 127.0.0.2 so its address differs from nginx's (127.0.0.1, the one trusted proxy).
Every source's signed delivery goes through nginx over TLS: the signature still verifies on the
bytes nurture stores, oversized bodies are refused before nurture sees them, and the address
nurture records (and Brevo's allowlist checks) is the client's, whatever the client claims.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx
import orjson
import pytest
from sqlalchemy import func, select

from nurture.database import migrate
from nurture.database.engine import Database
from nurture.pack import DEFAULTS_DIR
from nurture.schema.tables import events
from nurture.testing import (
    brevo_request,
    calcom_request,
    new_secret,
    resend_request,
    signed_json,
    standard_request,
    stripe_request,
)
from tests.system.serving import Nginx, nginx_in_front_of, nurture_serve

pytestmark = pytest.mark.slow

CLIENT = "127.0.0.2"  # nginx connects to nurture from 127.0.0.1
LIMIT = 1024 * 1024
TRACK, FORMS, ACME = new_secret(), new_secret(), new_secret()
RESEND = new_secret()
BREVO = "brevo:proxy-test-password"
CALCOM = "calcom-proxy-secret"
STRIPE = "whsec_proxy_stripe_secret"

SOURCES = f"""
sources:
  - type: brevo
    secret_env: NURTURE_BREVO_WEBHOOK_TOKEN
    ip_allowlist: [{CLIENT}/32]
  - type: resend
    secret_env: NURTURE_RESEND_WEBHOOK_SECRET
  - type: calcom
    secret_env: NURTURE_CALCOM_WEBHOOK_SECRET
  - type: stripe
    secret_env: NURTURE_STRIPE_WEBHOOK_SECRET
  - type: generic
    id: acme
    secret_env: NURTURE_ACME_WEBHOOK_SECRET
    mapping:
      type: event
      data: body
      contact: {{email: body.email}}
      keep_types: true
"""


@dataclass
class Stack:
    nginx: Nginx
    direct: str  # nurture itself, bypassing nginx
    db: Database


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("proxy")
    automation = tmp / "automation"
    shutil.copytree(DEFAULTS_DIR, automation)
    (automation / "sources.yaml").write_text(SOURCES)
    url = f"sqlite:///{tmp / 'nurture.db'}"
    db = Database(url)
    migrate.upgrade(db)
    env = {
        "PATH": "/usr/bin:/bin",
        "NURTURE_DATABASE_URL": url,
        "NURTURE_AUTOMATION_DIR": str(automation),
        "NURTURE_TRUSTED_PROXIES": "127.0.0.1",
        "NURTURE_TRACK_SECRET": TRACK,
        "NURTURE_FORMS_SECRET": FORMS,
        "NURTURE_ACME_WEBHOOK_SECRET": ACME,
        "NURTURE_BREVO_WEBHOOK_TOKEN": BREVO,
        "NURTURE_RESEND_WEBHOOK_SECRET": RESEND,
        "NURTURE_CALCOM_WEBHOOK_SECRET": CALCOM,
        "NURTURE_STRIPE_WEBHOOK_SECRET": STRIPE,
    }
    with nurture_serve(env, tmp / "serve.log") as (direct, proc):
        port = int(direct.rsplit(":", 1)[1])
        with nginx_in_front_of([port], tmp / "nginx") as nginx:
            yield Stack(nginx, direct, db)
        proc_log = (tmp / "serve.log").read_text()
    db.dispose()
    assert proc.returncode == 0, proc_log[-3000:]
    assert "client addresses from proxies 127.0.0.1" in " ".join(proc_log.split())


def now() -> datetime:
    return datetime.now(UTC)


# Bodies as senders write them: key order, spacing, escapes and non-ASCII text that any
# re-encoding by the proxy would change, and with it the signature.
def deliveries() -> list[tuple[str, bytes, dict[str, str]]]:
    track = (
        b'{ "id": "trk-1",  "type": "page.viewed",\n  "contact": {"email": "ann@example.com",'
        b' "first_name": "Ann\xc3\xa9"},\n  "data": {"url": "/pricing?a=1&b=%20", '
        b'"note": "Gr\xc3\xbc\xc3\x9fe \xe2\x80\x94 \\u2713 \\"quoted\\""}}'
    )
    brevo = {
        "event": "delivered",
        "email": "ann@example.com",
        "message-id": "<proxy-1@smtp-relay.mailin.fr>",
        "ts_epoch": 1795424400123,
        "subject": "Caf\u00e9 \u2615",
    }
    resend = {
        "type": "email.delivered",
        "created_at": "2026-11-23T08:59:30.123456+00:00",
        "data": {
            "email_id": "56761188-7520-42d8-8898-ff6fc54ce618",
            "to": ["ann@example.com"],
            "subject": "Welcome \u00e0 bord",
            "created_at": "2026-11-23T08:58:00.000000+00:00",
        },
    }
    calcom = {
        "triggerEvent": "BOOKING_CREATED",
        "createdAt": "2026-11-23T08:30:00.000Z",
        "payload": {
            "type": "strategy-call",
            "title": "Call with Zo\u00eb",
            "startTime": "2026-12-01T15:00:00Z",
            "endTime": "2026-12-01T15:30:00Z",
            "organizer": {"name": "Sam", "email": "sam@host.example", "timeZone": "UTC"},
            "attendees": [{"name": "Ann", "email": "ann@example.com", "timeZone": "UTC"}],
            "uid": "bk_proxy_1",
            "bookingId": 991,
        },
    }
    stripe = {
        "id": "evt_proxy_1",
        "object": "event",
        "api_version": "2024-06-20",
        "created": 1795424100,
        "type": "payment_intent.succeeded",
        "data": {
            "object": {
                "id": "pi_proxy",
                "object": "payment_intent",
                "amount": 4900,
                "amount_received": 4900,
                "currency": "eur",
                "receipt_email": "ann@example.com",
                "status": "succeeded",
                "metadata": {},
            }
        },
    }
    form = {
        "email": "ann@example.com",
        "first_name": "Ann",
        "assessment_score": 62,
        "business_name": "Ann\u2019s Bakery",
    }
    acme = {"event": "deal.won", "body": {"email": "ann@example.com", "amount": 12}}
    t = now()
    legacy = {**brevo, "message-id": "<proxy-2@smtp-relay.mailin.fr>", "event": "opened"}
    return [
        ("/webhooks/track", *signed_json(TRACK, track, t)),
        ("/webhooks/brevo", *brevo_request(BREVO, brevo)),
        ("/webhook/email", *brevo_request(BREVO, legacy)),
        ("/webhooks/resend", *resend_request(RESEND, resend, t)),
        ("/webhooks/calcom", *calcom_request(CALCOM, calcom)),
        ("/webhooks/stripe", *stripe_request(STRIPE, stripe, t)),
        ("/webhooks/forms/christmas-assessment", *standard_request(FORMS, form, t)),
        ("/webhooks/generic/acme", *standard_request(ACME, acme, t)),
    ]


def rows(db: Database, ids: list[int]) -> list[dict[str, Any]]:
    with db.read() as conn:
        found = conn.execute(
            select(events.c.id, events.c.source, events.c.raw, events.c.client_addr)
            .where(events.c.id.in_(ids))
            .order_by(events.c.id)
        ).mappings()
        return [dict(r) for r in found]


def count(db: Database) -> int:
    with db.read() as conn:
        return int(conn.execute(select(func.count()).select_from(events)).scalar_one())


def test_every_source_verifies_through_nginx_on_the_raw_bytes(stack: Stack) -> None:
    with stack.nginx.client() as client:
        for path, body, headers in deliveries():
            r = client.post(path, content=body, headers=headers)
            assert r.status_code == 202, (path, r.status_code, r.text)
            stored = rows(stack.db, r.json()["event_ids"])
            assert stored, path
            for row in stored:
                # Byte for byte what was signed and sent; from the client, not from nginx.
                assert bytes(row["raw"]) == body, path
                assert row["client_addr"] == CLIENT, (path, row)


def test_a_body_at_the_limit_passes_untouched(stack: Stack) -> None:
    event = {"id": "big-1", "type": "page.viewed", "contact": {"email": "big@example.com"}}
    shell = len(orjson.dumps({**event, "data": {"pad": ""}}))
    payload = {**event, "data": {"pad": "\u00e9" * ((LIMIT - shell) // 2)}}
    body, headers = signed_json(TRACK, payload, now())
    assert LIMIT - 2 <= len(body) <= LIMIT
    with stack.nginx.client() as client:
        r = client.post("/webhooks/track", content=body, headers=headers)
    assert r.status_code == 202, r.text
    assert bytes(rows(stack.db, r.json()["event_ids"])[0]["raw"]) == body


def test_oversized_bodies_are_refused_before_nurture(stack: Stack) -> None:
    before = count(stack.db)
    event = {"id": "huge-1", "type": "page.viewed", "contact": {"email": "x@example.com"}}
    body, headers = signed_json(TRACK, {**event, "data": {"pad": "x" * LIMIT}}, now())
    assert len(body) > LIMIT

    def chunks() -> Iterator[bytes]:
        for start in range(0, len(body), 64 * 1024):
            yield body[start : start + 64 * 1024]

    with stack.nginx.client() as client:
        sized = client.post("/webhooks/track", content=body, headers=headers)
        # No Content-Length: nginx counts while reading the chunked body.
        chunked = client.post("/webhooks/brevo", content=chunks(), headers=headers)
    for r in (sized, chunked):
        assert r.status_code == 413, r.text
        assert r.headers["content-type"] == "application/problem+json"
        assert r.json()["status"] == 413
    assert count(stack.db) == before


def test_the_address_recorded_is_the_clients_whatever_it_claims(stack: Stack) -> None:
    spoof = {"x-forwarded-for": "203.0.113.66", "x-forwarded-proto": "http"}
    event = {"type": "page.viewed", "contact": {"email": "spoof@example.com"}}
    with stack.nginx.client() as client:
        body, headers = signed_json(TRACK, {**event, "id": "spoof-1"}, now())
        r = client.post("/webhooks/track", content=body, headers={**headers, **spoof})
        assert r.status_code == 202, r.text
        assert rows(stack.db, r.json()["event_ids"])[0]["client_addr"] == CLIENT
    # Straight to nurture: the client is not a trusted proxy, so its header is ignored.
    direct = httpx.Client(
        base_url=stack.direct, transport=httpx.HTTPTransport(local_address=CLIENT)
    )
    with direct:
        body, headers = signed_json(TRACK, {**event, "id": "spoof-2"}, now())
        r = direct.post("/webhooks/track", content=body, headers={**headers, **spoof})
        assert r.status_code == 202, r.text
        assert rows(stack.db, r.json()["event_ids"])[0]["client_addr"] == CLIENT


def test_brevos_allowlist_sees_the_client_not_the_proxy(stack: Stack) -> None:
    payload = {"event": "opened", "email": "ann@example.com", "message-id": "<al-1@x>"}
    body, headers = brevo_request(BREVO, payload)
    with stack.nginx.client() as client:  # from 127.0.0.2, in the allowlist
        assert client.post("/webhooks/brevo", content=body, headers=headers).status_code == 202
    with stack.nginx.client("127.0.0.3") as client:  # through the trusted proxy, not allowed
        r = client.post("/webhooks/brevo", content=body, headers=headers)
        assert r.status_code == 403, r.text
    # Claiming the allowed address straight to nurture does not help.
    transport = httpx.HTTPTransport(local_address="127.0.0.3")
    with httpx.Client(base_url=stack.direct, transport=transport) as direct:
        r = direct.post(
            "/webhooks/brevo", content=body, headers={**headers, "x-forwarded-for": CLIENT}
        )
        assert r.status_code == 403, r.text


def test_the_scheme_is_https_behind_nginx(stack: Stack) -> None:
    # A trailing slash redirects to an absolute URL made from the request's scheme.
    with stack.nginx.client() as client:
        r = client.post("/webhooks/track/", content=b"{}", follow_redirects=False)
    assert r.status_code == 307
    assert r.headers["location"].startswith("https://")
    # Straight to nurture from a client that is not the trusted proxy: the header is ignored.
    transport = httpx.HTTPTransport(local_address=CLIENT)
    with httpx.Client(base_url=stack.direct, transport=transport) as direct:
        r = direct.post(
            "/webhooks/track/",
            content=b"{}",
            headers={"x-forwarded-proto": "https"},
            follow_redirects=False,
        )
    assert r.headers["location"].startswith("http://")


def test_plain_http_redirects_and_metrics_stay_private(stack: Stack) -> None:
    with httpx.Client(base_url=stack.nginx.http) as plain:
        r = plain.post("/webhooks/track", content=b"{}", follow_redirects=False)
    assert r.status_code == 301
    assert r.headers["location"].startswith("https://")
    with stack.nginx.client() as client:
        assert client.get("/metrics").status_code == 404
        assert client.get("/readyz").status_code == 200
    # Prometheus scrapes the instance itself, which counted what came through nginx.
    text = httpx.get(stack.direct + "/metrics").text
    assert 'nurture_webhook_requests_total{source="stripe",status="202"}' in text
