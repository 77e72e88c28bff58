"""What the overview and the Inbox show after real webhook requests (SQLite and PostgreSQL)."""

from __future__ import annotations

import re
from datetime import timedelta

import orjson
from starlette.testclient import TestClient

from nurture.storage import intake_counts
from nurture.testing import Harness, signed_json
from tests.e2e.conftest import TRACK_SECRET
from tests.e2e.console.conftest import VIEWER, Flush, form_token, log_in


def post_track(h: Harness, event: dict[str, object], *, at_offset: int = 0) -> int:
    body, headers = signed_json(TRACK_SECRET, event, h.clock.now() + timedelta(seconds=at_offset))
    return h.client.post("/webhooks/track", content=body, headers=headers).status_code


def source_row(html: str, source: str) -> str:
    found = re.search(
        rf'<tr>\s*<th scope="row"><a href="[^"]*">{re.escape(source)}</a></th>(.*?)</tr>',
        html,
        re.S,
    )
    assert found, f"no row for {source}"
    return found.group(1)


def test_the_overview_counts_events_rejections_and_the_last_accepted_request(
    h: Harness, as_viewer: TestClient, flush: Flush
) -> None:
    event = {"id": "ov-1", "type": "page.viewed", "contact": {"email": "ann@example.com"}}
    assert post_track(h, event) == 202
    assert post_track(h, event) == 200  # duplicate
    assert post_track(h, {**event, "id": "ov-2"}, at_offset=-3600) == 401  # stale timestamp
    bad = h.client.post(
        "/webhooks/track",
        content=b'{"type": "page.viewed"}',
        headers={
            "content-type": "application/json",
            "webhook-id": "x",
            "webhook-timestamp": str(int(h.clock.now().timestamp())),
            "webhook-signature": "v1,AAAA",
        },
    )
    assert bad.status_code == 401  # bad signature
    assert post_track(h, {"id": "ov-3", "type": "email.opened"}) == 422  # schema error
    assert flush() > 0
    html = as_viewer.get("/console").text
    row = source_row(html, "track")
    assert re.search(r'<td class="num">1</td>', row)  # one event in
    assert "bad signature: 1" in row
    assert "stale timestamp: 1" in row
    assert "schema error: 1" in row
    assert "just now" in row  # last accepted request
    # Unknown generic sources share one name: the roll-up cannot be grown by strangers.
    for name in ("a", "b", "c"):
        h.client.post(
            f"/webhooks/generic/{name}", content=b"{}", headers={"content-type": "application/json"}
        )
    flush()
    with h.container.db.read() as conn:
        rows = intake_counts.series(conn, h.clock.now() - timedelta(hours=1), 1)
    sources = {source for _, source, _, _ in rows}
    assert sources == {"track", "generic:?"}


def test_the_overview_switches_between_24_hours_and_7_days(
    h: Harness, as_viewer: TestClient, flush: Flush
) -> None:
    assert (
        post_track(h, {"id": "w-1", "type": "page.viewed", "contact": {"email": "a@example.com"}})
        == 202
    )
    flush()
    h.clock.advance(timedelta(days=2))
    assert log_in(as_viewer, VIEWER).status_code == 303  # the old session went idle
    day = as_viewer.get("/console?window=24h").text
    week = as_viewer.get("/console?window=7d").text
    assert re.search(r'<td class="num">1</td>', source_row(week, "track"))
    assert re.search(r'<td class="num">0</td>', source_row(day, "track"))
    assert "2 d ago" in source_row(day, "track")
    assert as_viewer.get("/console?window=nonsense").status_code == 200  # falls back to 24 h


def test_the_inbox_lists_requests_with_secrets_masked(
    h: Harness, as_viewer: TestClient, flush: Flush
) -> None:
    event = {
        "id": "in-1",
        "type": "page.viewed",
        "contact": {"email": "bob@example.com", "first_name": "<script>alert(1)</script>"},
        "data": {"api_key": "sk_live_abcdefghijkl", "url": "https://user:pw@example.com/x"},
    }
    assert post_track(h, event) == 202
    rejected = h.client.post(
        "/webhooks/track",
        content=orjson.dumps({"type": "page.viewed", "password": "hunter22"}),
        headers={"content-type": "application/json", "authorization": "Bearer nk_secret_value"},
    )
    assert rejected.status_code == 401
    flush()
    listing = as_viewer.get("/console/inbox").text
    assert listing.count('<span class="badge badge-') == 2
    ids = [int(i) for i in re.findall(r'href="/console/inbox/(\d+)"', listing)]
    rejected_page = as_viewer.get(f"/console/inbox/{max(ids)}").text
    accepted_page = as_viewer.get(f"/console/inbox/{min(ids)}").text
    for page in (rejected_page, accepted_page):
        assert "<script>alert(1)</script>" not in page
        assert "hunter22" not in page and "nk_secret_value" not in page
        assert "sk_live_abcdefghijkl" not in page and "user:pw@" not in page
    assert "bad signature" in rejected_page
    assert (
        "&#34;password&#34;: &#34;[redacted]&#34;" in rejected_page or "[redacted]" in rejected_page
    )
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in accepted_page
    only_rejected = as_viewer.get("/console/inbox?outcome=rejected").text
    assert only_rejected.count('<span class="badge badge-') == 1


def test_an_event_that_failed_can_be_replayed_from_the_inbox(
    h: Harness, as_admin: TestClient, flush: Flush
) -> None:
    from sqlalchemy import update

    from nurture.schema.tables import events
    from nurture.storage import audit
    from nurture.storage import events as event_store

    assert (
        post_track(h, {"id": "f-1", "type": "page.viewed", "contact": {"email": "c@example.com"}})
        == 202
    )
    flush()
    with h.container.db.begin() as conn:
        conn.execute(update(events).values(status="failed", attempts=5, error="step exploded"))
    listing = as_admin.get("/console/inbox").text
    delivery_id = re.findall(r'href="/console/inbox/(\d+)"', listing)[0]
    page = as_admin.get(f"/console/inbox/{delivery_id}").text
    assert "step exploded" in page
    event_id = re.search(r'action="/console/events/(\d+)/replay"', page)
    assert event_id
    r = as_admin.post(
        f"/console/events/{event_id.group(1)}/replay",
        data={"csrf": form_token(page), "back": delivery_id},
        follow_redirects=False,
    )
    assert r.headers["location"] == f"/console/inbox/{delivery_id}?done=replayed"
    with h.container.db.read() as conn:
        row = event_store.get(conn, int(event_id.group(1)))
        entry = audit.recent(conn, target_kind="event")[0]
    assert row is not None and row["status"] == "pending" and row["attempts"] == 0
    assert entry["actor"] == "user:ada" and entry["detail"]["error"] == "step exploded"
    h.process()
    assert "queued again" in as_admin.get(r.headers["location"]).text
