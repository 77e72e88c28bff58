"""The Sequences, Rules and Templates pages in process (SQLite and PostgreSQL)."""

from __future__ import annotations

import re
from datetime import timedelta

from starlette.testclient import TestClient

from nurture.storage import contacts as contact_store
from nurture.storage import timeline as timeline_store
from nurture.testing import Harness
from tests.e2e.console.conftest import form_token
from tests.e2e.console.funnel_seed import EXPECTED, seed_funnel


def _cells(html: str, stage: str) -> list[int]:
    row = re.search(rf'<tr><th scope="row">{re.escape(stage)}</th>(.*?)</tr>', html, re.S)
    assert row, stage
    numbers = re.findall(r'<td class="num">([\d\u202f]+)', row.group(1))
    return [int(n.replace("\u202f", "")) for n in numbers]


def test_the_funnel_counts_each_stage_by_segment(h: Harness, as_viewer: TestClient) -> None:
    seed_funnel(h.container.db, h.clock.now())
    listing = as_viewer.get("/console/sequences")
    assert 'href="/console/sequences/christmas-2025"' in listing.text
    page = as_viewer.get("/console/sequences/christmas-2025")
    assert page.status_code == 200
    html = page.text
    assert "split by segment <code>assessment</code>" in html
    for stage, (total, critical, urgent, none) in EXPECTED.items():
        cells = _cells(html, stage)
        # all, then CRITICAL, URGENT, OPTIMIZE, no segment
        assert cells[0] == total, stage
        assert cells[2:] == [critical, urgent, 0, none], stage
        assert f'data-total="{total}"' in html
    assert 'aria-label="Funnel of christmas-2025: enrolled 6 (100 %)' in html
    svg = html[html.index("<svg") : html.index("</svg>")]
    assert "<script" not in svg and "style=" not in svg


def test_an_unknown_sequence_is_a_404_page(h: Harness, as_viewer: TestClient) -> None:
    r = as_viewer.get("/console/sequences/nope")
    assert r.status_code == 404 and "no sequence" in r.text


def test_rules_show_as_written_with_fire_counts(h: Harness, as_viewer: TestClient) -> None:
    now = h.clock.now()
    with h.container.db.begin() as conn:
        contact = contact_store.create(conn, "fires@example.com", now)
        timeline_store.append(
            conn,
            [
                {
                    "contact_id": contact.id,
                    "event_id": None,
                    "at": now - ago,
                    "kind": kind,
                    "rule_id": "email-clicked",
                    "detail": {},
                }
                for ago, kind in (
                    (timedelta(hours=1), "rule.fired"),
                    (timedelta(days=3), "rule.fired"),
                    (timedelta(days=10), "rule.fired"),
                    (timedelta(hours=2), "score.changed"),
                )
            ],
        )
    html = as_viewer.get("/console/rules").text
    row = re.search(r'<tr id="rule-email-clicked">(.*?)</tr>', html, re.S)
    assert row is not None
    assert '<td class="num fired-day">1</td><td class="num fired-week">2</td>' in row.group(1)
    assert "<code>email.clicked</code>" in row.group(1)
    assert "60 min ago" in row.group(1)
    never = re.search(r'<tr id="rule-email-bounced">(.*?)</tr>', html, re.S)
    assert never is not None and "never" in never.group(1)


def test_a_dry_run_shows_the_decisions_and_changes_nothing(
    h: Harness, as_viewer: TestClient
) -> None:
    now = h.clock.now()
    with h.container.db.begin() as conn:
        contact = contact_store.create(conn, "dry@example.com", now)
    page = as_viewer.get("/console/rules")
    token = form_token(page.text)
    event = '{"type": "purchase.completed", "data": {"amount": 120, "currency": "EUR"}}'
    r = as_viewer.post(
        "/console/rules/dry-run",
        data={"csrf": token, "event": event, "contact": "dry@example.com"},
    )
    assert r.status_code == 200
    decisions = re.search(r'<table class="data" id="decisions">(.*?)</table>', r.text, re.S)
    assert decisions is not None
    assert "purchase" in decisions.group(1) and "send_email" in decisions.group(1)
    assert "Lead score: 50" in r.text
    with h.container.db.read() as conn:
        assert timeline_store.for_contact(conn, contact.id) == []
    # Bad input: named next to its field, 422.
    for data, field, message in (
        ({"event": "{not json"}, "event", "not JSON"),
        ({"event": "[1]"}, "event", "a JSON object"),
        ({"event": '{"data": {}}'}, "event", "event.type: required"),
        ({"event": event, "contact": "nobody@example.com"}, "contact", "no contact"),
    ):
        r = as_viewer.post("/console/rules/dry-run", data={"csrf": token, **data})
        assert r.status_code == 422, data
        assert f'id="f-{field}-error">{message}' in r.text, r.text[-3000:]
    r = as_viewer.post("/console/rules/dry-run", data={"csrf": "wrong", "event": event})
    assert r.status_code == 403


def test_template_preview_for_a_contact_and_the_strict_error(
    h: Harness, as_viewer: TestClient
) -> None:
    now = h.clock.now()
    with h.container.db.begin() as conn:
        contact = contact_store.create(conn, "tpl@example.com", now, {"first_name": "<b>Tess</b>"})
    listing = as_viewer.get("/console/templates")
    assert 'href="/console/templates/christmas_email_1"' in listing.text
    page = as_viewer.get(f"/console/templates/christmas_email_1?contact={contact.id}")
    assert page.status_code == 200
    assert 'id="subject">' in page.text and "&lt;b&gt;Tess&lt;/b&gt;" in page.text
    assert "<iframe" in page.text and " sandbox" in page.text
    assert "allow-scripts" not in page.text
    framed = as_viewer.get(f"/console/templates/christmas_email_1/html?contact={contact.id}")
    assert framed.status_code == 200
    csp = framed.headers["content-security-policy"]
    assert "sandbox" in csp and "script-src" not in csp and "frame-ancestors 'self'" in csp
    assert framed.headers["x-frame-options"] == "SAMEORIGIN"
    assert "&lt;b&gt;Tess&lt;/b&gt;" in framed.text
    # The console's own pages may frame only themselves.
    assert "frame-src 'self'" in page.headers["content-security-policy"]
    # A variable the contact cannot give: the strict-mode error, not a half-rendered mail.
    broken = as_viewer.get(f"/console/templates/precall_72h?contact={contact.id}")
    assert 'id="template-error"' in broken.text
    assert "undefined variable" in broken.text
    sample = as_viewer.get("/console/templates/precall_72h")
    assert 'id="subject">' in sample.text
    bad = as_viewer.get("/console/templates/christmas_email_1?contact=nobody@example.com&event=x")
    assert bad.status_code == 422
    assert 'id="f-contact-error">no contact' in bad.text
    assert 'id="f-event-error">an event number' in bad.text
    assert as_viewer.get("/console/templates/nope").status_code == 404
