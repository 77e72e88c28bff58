"""``/metrics``: what the shipped alert rules (deploy/prometheus/) read, with real values."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import update

from nurture import jobs
from nurture.clock import VirtualClock
from nurture.config import Settings
from nurture.schema.tables import jobs as jobs_table
from nurture.storage import messages as message_store
from nurture.testing import Harness, harness, new_secret, signed_json

SECRET = new_secret()


@pytest.fixture
def h(make_settings: Callable[..., Settings], clock: VirtualClock) -> Iterator[Harness]:
    with harness(make_settings(track_secret=SECRET, max_body_bytes=2048), clock) as hh:
        yield hh


def sample(body: str, name: str, **labels: str) -> float:
    """The value of one sample; fails if the series is missing."""
    inner = ",".join(f'{k}="{v}"' for k, v in labels.items())
    series = f"{name}{{{inner}}}" if labels else name
    match = re.search(rf"^{re.escape(series)} (\S+)$", body, re.MULTILINE)
    assert match, f"{series} not in /metrics:\n{body}"
    return float(match.group(1))


def scrape(h: Harness) -> str:
    r = h.client.get("/metrics")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain")
    return r.text


def post(h: Harness, event: Any, secret: str = SECRET) -> int:
    body, headers = signed_json(secret, event, h.clock.now())
    return h.client.post("/webhooks/track", content=body, headers=headers).status_code


def test_ingest_rate_and_rejections_per_source(h: Harness) -> None:
    before = scrape(h)
    # Every route's series exists before its first request, so rate() sees the first one.
    for source in ("track", "brevo", "resend", "calcom", "stripe", "forms", "generic"):
        assert sample(before, "nurture_webhook_events_total", source=source) == 0
    ev = {"id": "m1", "type": "page.viewed", "contact": {"email": "a@b.co"}}
    assert post(h, ev) == 202
    assert post(h, ev) == 200  # duplicate: answered, nothing new stored
    assert post(h, [{**ev, "id": f"b{i}"} for i in range(3)]) == 202
    assert post(h, ev, secret=new_secret()) == 401
    assert post(h, {**ev, "data": {"pad": "x" * 4096}}) == 413
    body = scrape(h)
    assert sample(body, "nurture_webhook_requests_total", source="track", status="202") == 2
    assert sample(body, "nurture_webhook_requests_total", source="track", status="200") == 1
    assert sample(body, "nurture_webhook_requests_total", source="track", status="401") == 1
    assert sample(body, "nurture_webhook_requests_total", source="track", status="413") == 1
    assert sample(body, "nurture_webhook_events_total", source="track") == 4
    # An unconfigured source answers 404, counted under its own label.
    assert h.client.post("/webhooks/stripe", content=b"{}").status_code == 404
    body = scrape(h)
    assert sample(body, "nurture_webhook_requests_total", source="stripe", status="404") == 1


def test_processing_lag_counts_from_when_an_event_became_processable(h: Harness) -> None:
    assert sample(scrape(h), "nurture_processing_lag_seconds") == 0
    assert post(h, {"id": "lag", "type": "page.viewed", "contact": {"email": "a@b.co"}}) == 202
    h.clock.advance(timedelta(seconds=90))
    body = scrape(h)
    assert sample(body, "nurture_processing_lag_seconds") == 90
    assert sample(body, "nurture_events", status="pending") >= 1
    h.process()
    body = scrape(h)
    assert sample(body, "nurture_processing_lag_seconds") == 0
    assert sample(body, "nurture_events", status="pending") == 0


def test_jobs_per_kind_dead_and_lateness(h: Harness) -> None:
    now = h.clock.now()
    with h.container.db.begin() as conn:
        jobs.enqueue(conn, kind="send_email", key="k1", run_at=now, payload={})
        jobs.enqueue(conn, kind="send_email", key="k2", run_at=now, payload={})
        jobs.enqueue(
            conn, kind="call_webhook", key="k3", run_at=now + timedelta(hours=1), payload={}
        )
        conn.execute(update(jobs_table).where(jobs_table.c.key == "k2").values(status="dead"))
    h.clock.advance(timedelta(seconds=42))
    body = scrape(h)
    assert sample(body, "nurture_jobs", kind="send_email", status="dead") == 1
    assert sample(body, "nurture_jobs", kind="send_email", status="scheduled") == 1
    assert sample(body, "nurture_jobs", kind="call_webhook", status="dead") == 0
    assert sample(body, "nurture_jobs_due", kind="send_email") == 1
    assert sample(body, "nurture_jobs_lateness_seconds", kind="send_email") == 42
    assert sample(body, "nurture_jobs_lateness_seconds", kind="call_webhook") == 0


def test_send_failures_per_provider(h: Harness) -> None:
    now = h.clock.now()
    rows = [("m1", "brevo", "failed"), ("m2", "brevo", "sent"), ("m3", "resend", "retrying")]
    with h.container.db.begin() as conn:
        for key, provider, status in rows:
            values = {"key": key, "channel": "email", "provider": provider, "transactional": False}
            message_store.record(conn, values, status, now)
    body = scrape(h)
    assert sample(body, "nurture_messages", channel="email", provider="brevo", status="failed") == 1
    assert sample(body, "nurture_messages", channel="email", provider="brevo", status="sent") == 1
    labels = {"channel": "email", "provider": "resend", "status": "retrying"}
    assert sample(body, "nurture_messages", **labels) == 1


def test_database_health(h: Harness) -> None:
    body = scrape(h)
    assert sample(body, "nurture_database_up") == 1
    assert sample(body, "nurture_database_errors_total") == 0


def test_an_unreachable_database_still_answers_with_the_process_counters(tmp_path: Any) -> None:
    # Port 1 on loopback refuses at once: the database is down, the API process is not.
    settings = Settings(
        database_url="postgresql://nurture@127.0.0.1:1/nurture", track_secret=SECRET
    )
    with harness(settings) as down:
        body = scrape(down)
        assert sample(body, "nurture_database_up") == 0
        assert sample(body, "nurture_database_errors_total") >= 1
        assert sample(body, "nurture_webhook_events_total", source="track") == 0
