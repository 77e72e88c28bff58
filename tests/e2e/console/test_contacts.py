"""The Contacts pages in process (SQLite and PostgreSQL): search, one contact, every change
(tags, unsubscribe, exit a sequence, erase) with its audit entry, and bad input."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from unittest import mock

from starlette.testclient import TestClient

from nurture.errors import StorageUnavailable
from nurture.pack import DEFAULTS_DIR
from nurture.schema.tables import contacts
from nurture.sequences import SequenceService, enroll_contact
from nurture.sequences import load as load_sequences
from nurture.storage import audit
from nurture.storage import contacts as contact_store
from nurture.storage import enrollments as enrollment_store
from nurture.storage import retention as retention_store
from nurture.storage import scores as score_store
from nurture.testing import Harness
from tests.e2e.console.conftest import form_token


def make_contact(
    h: Harness,
    email: str | None,
    *,
    first: str = "Ann",
    last: str = "Example",
    tags: list[str] | None = None,
    segments: dict[str, str] | None = None,
    score: int = 50,
    time_zone: str | None = None,
) -> int:
    with h.container.db.begin() as conn:
        state = contact_store.create(conn, email, h.clock.now(), {"first_name": first})
        state.last_name = last
        state.tags = list(tags or [])
        state.segments = dict(segments or {})
        state.score = score
        state.time_zone = time_zone
        contact_store.save(conn, state, h.clock.now())
    return state.id


def ids_on(html: str) -> list[int]:
    return [int(i) for i in re.findall(r'href="/console/contacts/(\d+)"', html)]


def contact_row(h: Harness, contact_id: int) -> dict[str, Any] | None:
    with h.container.db.read() as conn:
        return contact_store.get_row(conn, contact_id)


def test_search_by_email_name_tag_segment_and_score(h: Harness, as_viewer: TestClient) -> None:
    ann = make_contact(h, "ann@example.com", tags=["vip"], segments={"assessment": "CRITICAL"})
    bob = make_contact(h, "bob@example.org", first="bob", last="Annand", score=80)
    cid = make_contact(h, "cid@example.net", first="Cid", last="Zed", tags=["lead"], score=10)
    assert set(ids_on(as_viewer.get("/console/contacts").text)) >= {ann, bob, cid}
    # e-mail prefix; a name prefix in any case matches first or last names
    assert ids_on(as_viewer.get("/console/contacts?q=bob@").text) == [bob]
    assert set(ids_on(as_viewer.get("/console/contacts?q=ann").text)) == {ann, bob}
    assert ids_on(as_viewer.get("/console/contacts?q=ZE").text) == [cid]
    assert ids_on(as_viewer.get("/console/contacts?tag=vip").text) == [ann]
    r = as_viewer.get("/console/contacts", params={"segment": "assessment=CRITICAL"})
    assert ids_on(r.text) == [ann]
    r = as_viewer.get("/console/contacts?score_min=60&score_max=90")
    assert ids_on(r.text) == [bob]
    assert ids_on(as_viewer.get("/console/contacts?q=nobody").text) == []


def test_search_pages_by_keyset(h: Harness, as_viewer: TestClient) -> None:
    made = [make_contact(h, f"page{i:02d}@example.com", tags=["bulk"]) for i in range(55)]
    first = as_viewer.get("/console/contacts?q=page")
    assert ids_on(first.text) == sorted(made, reverse=True)[:50]
    older = re.search(r'href="(/console/contacts\?[^"]*before=\d+)"', first.text)
    assert older is not None
    second = as_viewer.get(older.group(1).replace("&amp;", "&"))
    assert ids_on(second.text) == sorted(made, reverse=True)[50:]


def test_bad_search_values_are_named_next_to_their_field(h: Harness, as_viewer: TestClient) -> None:
    r = as_viewer.get("/console/contacts?score_min=abc&score_max=5&segment=nope=x")
    assert r.status_code == 422
    assert 'id="f-score_min-error">a whole number' in r.text
    assert 'id="f-segment-error">pick one of the listed segments' in r.text
    r = as_viewer.get("/console/contacts?score_min=50&score_max=5")
    assert r.status_code == 422
    assert 'id="f-score_max-error">must not be below the minimum' in r.text


def test_contact_page_shows_steps_in_the_contacts_time_zone(
    h: Harness, as_viewer: TestClient
) -> None:
    cid = make_contact(
        h, "tz@example.com", segments={"assessment": "URGENT"}, time_zone="America/New_York"
    )
    service = SequenceService(load_sequences(DEFAULTS_DIR))
    settings = h.container.settings
    result, _ = enroll_contact(
        h.container.db,
        service,
        "christmas-2025",
        now=h.clock.now(),
        partitions=settings.partitions,
        contact_id=cid,
    )
    assert result.enrollment_id is not None
    with h.container.db.read() as conn:
        steps = enrollment_store.steps(conn, [result.enrollment_id])[result.enrollment_id]
    page = as_viewer.get(f"/console/contacts/{cid}")
    assert page.status_code == 200
    assert "times in America/New_York" in page.text
    assert len(steps) == 7
    for step in steps:
        from zoneinfo import ZoneInfo

        local = step["due_at"].astimezone(ZoneInfo("America/New_York"))
        assert local.strftime("%Y-%m-%d %H:%M %Z") in page.text
    assert "christmas-2025" in page.text
    assert "Lead score" in page.text


def test_a_score_summed_by_retention_reads_as_earlier_rules(
    h: Harness, as_viewer: TestClient
) -> None:
    ann = make_contact(h, "ann@example.com", score=65)
    row = {"contact_id": ann, "event_id": None, "rule_id": None, "action_index": None,
           "component": "rule", "delta": 15, "reason": retention_store.FOLDED,
           "score_before": 50, "score_after": 65, "at": h.clock.now()}  # fmt: skip
    with h.container.db.begin() as conn:
        score_store.append(conn, [row])
    page = as_viewer.get(f"/console/contacts/{ann}").text
    table = page[page.index('id="score-rules"') :]
    table = table[: table.index("</table>")]
    assert "earlier rules" in table and "+15" in table and retention_store.FOLDED in table
    assert "None" not in table


def test_a_missing_contact_is_a_404_page(h: Harness, as_viewer: TestClient) -> None:
    for path in ("/console/contacts/424242", "/console/contacts/abc", "/console/contacts/9/erase"):
        r = as_viewer.get(path)
        assert r.status_code == 404, path
        assert "Not found" in r.text


def test_admin_tags_unsubscribes_and_the_audit_says_who(h: Harness, as_admin: TestClient) -> None:
    cid = make_contact(h, "tag@example.com")
    page = as_admin.get(f"/console/contacts/{cid}")
    token = form_token(page.text)
    r = as_admin.post(f"/console/contacts/{cid}/tags", data={"csrf": token, "tag": " webinar "})
    assert r.status_code == 200 and "The tag is added." in r.text
    row = contact_row(h, cid)
    assert row is not None and row["tags"] == ["webinar"]
    r = as_admin.post(f"/console/contacts/{cid}/tags", data={"csrf": token, "tag": "   "})
    assert r.status_code == 422
    assert 'id="f-tag-error">type a tag' in r.text
    r = as_admin.post(
        f"/console/contacts/{cid}/tags/remove", data={"csrf": token, "tag": "webinar"}
    )
    assert "The tag is removed." in r.text
    r = as_admin.post(f"/console/contacts/{cid}/unsubscribe", data={"csrf": token})
    assert "The contact is unsubscribed" in r.text
    row = contact_row(h, cid)
    assert row is not None and row["tags"] == [] and row["status"] == "unsubscribed"
    with h.container.db.read() as conn:
        entries = audit.recent(conn, target_kind="contact", target_id=str(cid))
    assert [e["action"] for e in entries] == [
        "contact.unsubscribed",
        "contact.tag_removed",
        "contact.tag_added",
    ]
    assert {e["actor"] for e in entries} == {"user:ada"}
    assert "contact.tag_added" in as_admin.get(f"/console/contacts/{cid}").text


def test_exit_a_sequence_cancels_its_pending_steps(h: Harness, as_admin: TestClient) -> None:
    cid = make_contact(h, "exit@example.com", segments={"assessment": "CRITICAL"})
    service = SequenceService(load_sequences(DEFAULTS_DIR))
    result, _ = enroll_contact(
        h.container.db,
        service,
        "christmas-2025",
        now=h.clock.now(),
        partitions=h.container.settings.partitions,
        contact_id=cid,
    )
    eid = result.enrollment_id
    assert eid is not None
    token = form_token(as_admin.get(f"/console/contacts/{cid}").text)
    other = make_contact(h, "other@example.com")
    # The enrollment must belong to the contact in the address.
    r = as_admin.post(f"/console/contacts/{other}/enrollments/{eid}/exit", data={"csrf": token})
    assert r.status_code == 404
    r = as_admin.post(f"/console/contacts/{cid}/enrollments/{eid}/exit", data={"csrf": token})
    assert "left the sequence" in r.text
    with h.container.db.read() as conn:
        row = enrollment_store.get(conn, eid)
        steps = enrollment_store.steps(conn, [eid])[eid]
        entry = audit.recent(conn, target_kind="contact", target_id=str(cid))[0]
    assert row is not None and row["status"] == "exited"
    assert {s["status"] for s in steps} <= {"cancelled", "sent", "skipped"}
    assert entry["action"] == "enrollment.exit" and entry["actor"] == "user:ada"


def test_erase_needs_the_confirmation_then_the_contact_is_gone(
    h: Harness, as_admin: TestClient
) -> None:
    cid = make_contact(h, "erase@example.com")
    confirm = as_admin.get(f"/console/contacts/{cid}/erase")
    token = form_token(confirm.text)
    r = as_admin.post(f"/console/contacts/{cid}/erase", data={"csrf": token, "confirm": "nope"})
    assert r.status_code == 422
    assert "type erase@example.com exactly to confirm" in r.text
    assert contact_row(h, cid) is not None
    r = as_admin.post(
        f"/console/contacts/{cid}/erase", data={"csrf": token, "confirm": "erase@example.com"}
    )
    assert r.status_code == 200
    assert f"Contact #{cid} was erased by user:ada" in r.text
    assert contact_row(h, cid) is None
    assert as_admin.get(f"/console/contacts/{cid}").status_code == 404


def test_a_viewer_cannot_change_a_contact(h: Harness, as_viewer: TestClient) -> None:
    cid = make_contact(h, "view@example.com", tags=["vip"])
    page = as_viewer.get(f"/console/contacts/{cid}")
    assert "Add tag" not in page.text and "Erase personal data" not in page.text
    token = form_token(page.text)
    for path, data in (
        (f"/console/contacts/{cid}/tags", {"tag": "x"}),
        (f"/console/contacts/{cid}/tags/remove", {"tag": "vip"}),
        (f"/console/contacts/{cid}/unsubscribe", {}),
        (f"/console/contacts/{cid}/erase", {"confirm": "view@example.com"}),
    ):
        r = as_viewer.post(path, data={"csrf": token, **data})
        assert r.status_code == 403, path
        assert "vic is a viewer" in r.text
    row = contact_row(h, cid)
    assert row is not None and row["tags"] == ["vip"] and row["status"] == "subscribed"


def test_a_database_that_cannot_take_the_write_changes_nothing(
    h: Harness, as_admin: TestClient
) -> None:
    cid = make_contact(h, "locked@example.com")
    token = form_token(as_admin.get(f"/console/contacts/{cid}").text)
    db = h.container.db

    @contextmanager
    def locked() -> Iterator[object]:
        raise StorageUnavailable("database unavailable: database is locked")
        yield  # pragma: no cover

    with mock.patch.object(db, "begin", locked):
        r = as_admin.post(f"/console/contacts/{cid}/tags", data={"csrf": token, "tag": "x"})
    assert r.status_code == 503
    assert "Nothing was changed" in r.text
    row = contact_row(h, cid)
    assert row is not None and row["tags"] == []


def test_names_and_values_are_escaped(h: Harness, as_viewer: TestClient) -> None:
    cid = make_contact(h, "xss@example.com", first="<img src=x onerror=alert(1)>")
    with h.container.db.begin() as conn:
        conn.execute(
            contacts.update()
            .where(contacts.c.id == cid)
            .values(attributes={"note": "<script>alert(2)</script>"})
        )
    html = as_viewer.get(f"/console/contacts/{cid}").text
    assert "<img src=x" not in html and "<script>alert" not in html
    assert "&lt;img src=x onerror=alert(1)&gt;" in html
    assert "&lt;img src=x" in as_viewer.get("/console/contacts?q=xss").text
