"""The processor's batch reads and writes of contacts, on SQLite and PostgreSQL.

On PostgreSQL ``create_many``, ``load_many`` and ``save_many`` are written at the driver level
(arrays and one JSON document), so these tests pin that what they write reads back through Core
exactly as Core would have written it, JSON ``null`` and UTC times included."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from sqlalchemy import select, text
from sqlalchemy.exc import StatementError

from nurture.database.engine import Database
from nurture.schema.tables import contacts
from nurture.storage import contacts as store
from tests.conftest import START


def test_create_many_gives_ids_in_the_order_given_and_blank_contacts(db: Database) -> None:
    emails = [f"c{i}@example.com" for i in range(30)] + [None, None]
    with db.begin() as conn:
        created = store.create_many(conn, emails, START)
    assert [c.email for c in created] == emails
    assert all(c.is_new and c.created_at == START for c in created)
    with db.read() as conn:
        by_id = {r.id: r for r in conn.execute(select(contacts))}
    assert [by_id[c.id].email for c in created] == emails
    row = by_id[created[0].id]
    assert (row.attributes, row.tags, row.segments, row.engagement, row.rfm) == (
        {},
        [],
        {},
        {},
        None,
    )
    assert (row.status, row.score, row.created_at, row.last_event_at) == (
        "subscribed",
        50,
        START,
        None,
    )


def test_save_then_load_many_round_trips_every_field(db: Database) -> None:
    with db.begin() as conn:
        ann, bob = store.create_many(conn, ["ann@example.com", "bob@example.com"], START)
        store.add_identities(conn, bob.id, {"stripe": "cus_1", "calcom": "u9"})
    ann.first_name, ann.phone, ann.time_zone = "Ann", "+44 20", "Europe/London"
    ann.attributes = {"plan": "pro", "n": 3, "nested": {"a": [1, "b"]}}
    ann.tags, ann.segments, ann.score = ["vip", "newsletter"], {"value": "VIP"}, 77
    ann.engagement = {"opens": 4}
    ann.rfm = {"score": 3.5, "frequency": 2}
    ann.status = "unsubscribed"
    # A time in another offset is stored as the same instant in UTC.
    ann.last_event_at = datetime(
        2026, 11, 23, 12, 30, 0, 123456, tzinfo=timezone(timedelta(hours=2))
    )
    later = START + timedelta(minutes=5)
    with db.begin() as conn:
        store.save_many(conn, [ann, bob], later)
    assert not ann.dirty and ann.updated_at == later
    with db.read() as conn:
        loaded = {c.id: c for c in store.load_many(conn, emails=["ann@example.com"], ids=[bob.id])}
        # Core reads the same values back.
        rows = {r.id: r for r in conn.execute(select(contacts))}
    got = loaded[ann.id]
    assert (got.first_name, got.last_name, got.phone, got.time_zone) == (
        "Ann",
        None,
        "+44 20",
        "Europe/London",
    )
    assert got.attributes == ann.attributes and got.tags == ["vip", "newsletter"]
    assert (got.segments, got.engagement, got.rfm) == ({"value": "VIP"}, {"opens": 4}, ann.rfm)
    assert (got.status, got.score) == ("unsubscribed", 77)
    assert got.last_event_at == datetime(2026, 11, 23, 10, 30, 0, 123456, tzinfo=UTC)
    assert got.last_event_at.tzinfo is UTC
    assert (got.created_at, got.updated_at) == (START, later)
    assert got.identities == {} and loaded[bob.id].identities == {"stripe": "cus_1", "calcom": "u9"}
    assert rows[ann.id].rfm == ann.rfm and rows[ann.id].last_event_at == got.last_event_at
    assert rows[bob.id].rfm is None


def test_saving_no_rfm_stores_the_json_null_core_writes(db: Database) -> None:
    """``rfm`` tells a JSON ``null`` (no figures yet) from SQL NULL (figures cleared)."""
    with db.begin() as conn:
        [ann] = store.create_many(conn, ["ann@example.com"], START)
        ann.rfm = None
        store.save_many(conn, [ann], START)
        stored = conn.execute(
            text("SELECT rfm IS NULL FROM contacts WHERE id = :id"), {"id": ann.id}
        ).scalar_one()
    assert not stored


def test_naive_times_are_refused(db: Database) -> None:
    with db.begin() as conn:
        [ann] = store.create_many(conn, ["ann@example.com"], START)
    ann.last_event_at = datetime(2026, 11, 23, 9, 0)
    # SQLite: Core's ``UtcDateTime`` refuses it (wrapped in a StatementError); PostgreSQL: the
    # driver-level statement, before anything is sent.
    with pytest.raises((ValueError, StatementError), match="naive"), db.begin() as conn:
        store.save_many(conn, [ann], START)


def test_load_many_with_nothing_to_look_for_reads_nothing(db: Database) -> None:
    with db.read() as conn:
        assert store.load_many(conn) == []
        assert store.load_many(conn, emails=["nobody@example.com"]) == []
