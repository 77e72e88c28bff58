"""Verification + parsing cost per inbound source, in process, against the track source.

What a request pays before the durable commit: ``verify`` on the raw bytes, then ``parse``.
The network and the database are left out on purpose (``bench/ingest.py`` measures those);
the budget (issue 4) is at most 20 % over ``/webhooks/track``.

    .venv/bin/python bench/sources.py [--seconds 1.0] [--rounds 3] [--requests 300]

``--requests N`` also posts N distinct signed deliveries per source, one at a time, through the
ASGI app into a temporary SQLite database (durable commit included): the end-to-end figure the
in-process cost is a share of.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from starlette.datastructures import Headers

from nurture.config import Settings
from nurture.pack import DEFAULTS_DIR, load_pack
from nurture.providers.catalog import build_sources
from nurture.providers.track.inbound import TrackSource
from nurture.testing import (
    brevo_request,
    calcom_request,
    new_secret,
    resend_request,
    signed_json,
    standard_request,
    stripe_request,
)

NOW = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)
TRACK_SECRET, RESEND, FORMS, GENERIC = new_secret(), new_secret(), new_secret(), new_secret()
BREVO, CALCOM, STRIPE = "brevo-bench-token", "calcom-bench-secret", "whsec_bench_stripe"

TRACK_EVENT = {
    "type": "page.viewed",
    "contact": {"email": "ann@example.com", "first_name": "Ann"},
    "data": {"url": "/pricing", "referrer": "https://example.com/"},
}
BREVO_EVENT = {
    "event": "click",
    "email": "ann@example.com",
    "id": 1234567,
    "date": "2026-11-23 10:00:00",
    "ts": 1795424400,
    "message-id": "<202611230900.11839465263@smtp-relay.mailin.fr>",
    "ts_event": 1795424400,
    "subject": "Welcome",
    "X-Mailin-custom": '{"nurture_message_id": "rule:17:welcome:0"}',
    "ts_epoch": 1795424400123,
    "link": "https://example.com/p",
    "tags": ["welcome"],
}
RESEND_EVENT = {
    "type": "email.clicked",
    "created_at": "2026-11-23T08:59:30.123456+00:00",
    "data": {
        "email_id": "56761188-7520-42d8-8898-ff6fc54ce618",
        "from": "Acme <hello@acme.example>",
        "to": ["ann@example.com"],
        "subject": "Welcome",
        "tags": [{"name": "nurture_message_id", "value": "seq:4:step-1"}],
        "click": {"link": "https://acme.example/p"},
    },
}
CALCOM_EVENT = {
    "triggerEvent": "BOOKING_CREATED",
    "createdAt": "2026-11-23T08:30:00.000Z",
    "payload": {
        "type": "strategy-call",
        "title": "Strategy call",
        "startTime": "2026-12-01T15:00:00Z",
        "endTime": "2026-12-01T15:30:00Z",
        "organizer": {"name": "Sam", "email": "sam@host.example", "timeZone": "Europe/London"},
        "attendees": [
            {"name": "Ann Lee", "email": "ann@example.com", "timeZone": "America/Toronto"}
        ],
        "location": "integrations:daily",
        "uid": "bk_1",
        "metadata": {"videoCallUrl": "https://app.cal.com/video/bk_1"},
    },
}
STRIPE_EVENT = {
    "id": "evt_1",
    "object": "event",
    "created": 1795424100,
    "livemode": False,
    "type": "checkout.session.completed",
    "data": {
        "object": {
            "id": "cs_1",
            "amount_total": 4900,
            "currency": "eur",
            "customer": "cus_1",
            "customer_details": {"email": "ann@example.com", "name": "Ann Lee"},
            "payment_intent": "pi_1",
        }
    },
}
FORM = {"email": "ann@example.com", "firstName": "Ann", "assessmentScore": 62, "redSystems": 2}
# A Standard Webhooks sender declared in the automation folder, with a mapping.
GENERIC_SOURCES = """
sources:
  - type: generic
    id: acme
    secret_env: NURTURE_ACME_WEBHOOK_SECRET
    mapping:
      type: event
      occurred_at: at
      data: body
      contact: {email: body.customer.email, identities: {acme_id: body.customer.id}}
      types: {deal.won: purchase.completed}
"""
GENERIC_EVENT = {
    "event": "deal.won",
    "at": "2026-11-23T08:00:00+01:00",
    "body": {"order_id": "D-1", "amount": 120, "customer": {"id": 7, "email": "ann@example.com"}},
}


def automation_dir(root: Path) -> Path:
    """The built-in pack plus the generic source (a folder replaces the pack, so copy it)."""
    folder = root / "automation"
    shutil.copytree(DEFAULTS_DIR, folder)
    (folder / "generic.yaml").write_text(GENERIC_SOURCES, encoding="utf-8")
    return folder


def all_secrets() -> dict[str, Any]:
    return {
        "brevo_webhook_token": BREVO,
        "resend_webhook_secret": RESEND,
        "calcom_webhook_secret": CALCOM,
        "stripe_webhook_secret": STRIPE,
        "forms_secret": FORMS,
        "extra_secrets": {"NURTURE_ACME_WEBHOOK_SECRET": GENERIC},
    }


def cases(folder: Path) -> list[tuple[str, Callable[[], int]]]:
    settings = Settings(**all_secrets())
    built = build_sources(settings, load_pack(folder))
    track = TrackSource([TRACK_SECRET], [])

    def run(source: Any, request: tuple[bytes, Mapping[str, str]]) -> Callable[[], int]:
        body, raw_headers = request
        headers = Headers(raw_headers)

        def once() -> int:
            source.verify(headers, body, NOW)
            return len(source.parse(body, headers))

        return once

    return [
        ("track (baseline)", run(track, signed_json(TRACK_SECRET, TRACK_EVENT, NOW))),
        ("brevo", run(built.providers["brevo"], brevo_request(BREVO, BREVO_EVENT))),
        ("resend", run(built.providers["resend"], resend_request(RESEND, RESEND_EVENT, NOW))),
        ("calcom", run(built.providers["calcom"], calcom_request(CALCOM, CALCOM_EVENT))),
        ("stripe", run(built.providers["stripe"], stripe_request(STRIPE, STRIPE_EVENT, NOW))),
        (
            "forms/christmas-assessment",
            run(built.forms["christmas-assessment"], standard_request(FORMS, FORM, NOW)),
        ),
        (
            "generic/acme",
            run(built.generic["acme"], standard_request(GENERIC, GENERIC_EVENT, NOW)),
        ),
    ]


def measure(fn: Callable[[], int], seconds: float) -> tuple[float, float, float]:
    """``(calls/s, wall µs per event, CPU µs per event)``. On a shared machine the wall figure
    moves with the load; the CPU figure (this process only) is the one to compare."""
    for _ in range(200):  # warm-up
        fn()
    calls = events = 0
    start, cpu = time.perf_counter(), time.process_time()
    deadline = start + seconds
    while True:
        for _ in range(200):
            events += fn()
        calls += 200
        now = time.perf_counter()
        if now >= deadline:
            break
    elapsed, used = now - start, time.process_time() - cpu
    return calls / elapsed, elapsed / events * 1e6, used / events * 1e6


def variants(index: int) -> list[tuple[str, str, tuple[bytes, Mapping[str, str]]]]:
    """One distinct, freshly signed delivery per source (a distinct dedupe key each time)."""
    booking = {**CALCOM_EVENT, "payload": {**CALCOM_EVENT["payload"], "uid": f"bk_{index}"}}  # type: ignore[dict-item]
    track = {**TRACK_EVENT, "data": {"url": f"/p/{index}"}}
    return [
        ("track (baseline)", "/webhooks/track", signed_json(TRACK_SECRET, track, NOW)),
        ("brevo", "/webhooks/brevo", brevo_request(BREVO, {**BREVO_EVENT, "ts_epoch": index})),
        ("resend", "/webhooks/resend", resend_request(RESEND, RESEND_EVENT, NOW)),
        ("calcom", "/webhooks/calcom", calcom_request(CALCOM, booking)),
        (
            "stripe",
            "/webhooks/stripe",
            stripe_request(STRIPE, {**STRIPE_EVENT, "id": f"evt_{index}"}, NOW),
        ),
        (
            "forms/christmas-assessment",
            "/webhooks/forms/christmas-assessment",
            standard_request(FORMS, FORM, NOW),
        ),
        (
            "generic/acme",
            "/webhooks/generic/acme",
            standard_request(GENERIC, GENERIC_EVENT, NOW),
        ),
    ]


def end_to_end(requests: int, folder: Path) -> dict[str, float]:
    """µs per request over the ASGI app with a durable SQLite commit, sequential."""
    from nurture.clock import VirtualClock
    from nurture.database import migrate
    from nurture.database.engine import Database
    from nurture.testing import harness

    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{Path(tmp) / 'bench.db'}"
        db = Database(url)
        migrate.upgrade(db)
        db.dispose()
        settings = Settings(
            database_url=url, track_secret=TRACK_SECRET, automation_dir=folder, **all_secrets()
        )
        prepared = [variants(i) for i in range(requests)]
        out: dict[str, float] = {}
        with harness(settings, VirtualClock(NOW)) as h:
            for column in range(len(prepared[0])):
                name = prepared[0][column][0]
                start = time.perf_counter()
                for row in prepared:
                    _, path, (body, headers) = row[column]
                    r = h.client.post(path, content=body, headers=dict(headers))
                    assert r.status_code == 202, (name, r.status_code, r.text)
                out[name] = (time.perf_counter() - start) / requests * 1e6
        return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=1.0, help="time per source and round")
    parser.add_argument("--rounds", type=int, default=3, help="rounds; the best of each is kept")
    parser.add_argument("--requests", type=int, default=0, help="end-to-end requests per source")
    args = parser.parse_args()
    best: dict[str, tuple[float, float, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        folder = automation_dir(Path(tmp))
        built = cases(folder)
        # Sources alternate within each round, so a burst of load elsewhere hits them all.
        for _ in range(args.rounds):
            for name, fn in built:
                rate, wall, cpu = measure(fn, args.seconds)
                old = best.get(name)
                best[name] = (
                    (max(old[0], rate), min(old[1], wall), min(old[2], cpu))
                    if old
                    else (rate, wall, cpu)
                )
        e2e = end_to_end(args.requests, folder) if args.requests else {}
    base_wall, base_cpu = best["track (baseline)"][1:]
    head = (
        f"{'source':<28} {'calls/s':>10} {'µs/event':>9} {'vs track':>9} "
        f"{'CPU µs/event':>13} {'vs track':>9}"
    )
    if e2e:
        head += f" {'µs/request e2e':>15} {'vs track':>9}"
    print(
        f"best of {args.rounds} rounds of {args.seconds:g} s per source; load average (1 min) "
        f"{os.getloadavg()[0]:.2f}, {os.cpu_count()} CPUs"
    )
    print(head)
    for name, (rate, wall, cpu) in best.items():
        line = (
            f"{name:<28} {rate:>10,.0f} {wall:>9.1f} {(wall / base_wall - 1) * 100:>+8.0f}% "
            f"{cpu:>13.1f} {(cpu / base_cpu - 1) * 100:>+8.0f}%"
        )
        if e2e:
            ratio = e2e[name] / e2e["track (baseline)"] - 1
            line += f" {e2e[name]:>15,.0f} {ratio * 100:>+8.0f}%"
        print(line)


if __name__ == "__main__":
    main()
