"""Intake roll-ups and the Inbox: counted in memory, added to the database (both databases)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from unittest import mock

from nurture.clock import VirtualClock
from nurture.database.engine import Database
from nurture.errors import StorageUnavailable
from nurture.intake.tally import RETENTION, Delivery, IntakeTally
from nurture.storage import inbox, intake_counts


def counts(db: Database, clock: VirtualClock) -> dict[tuple[str, str], int]:
    start = clock.now().replace(minute=0, second=0, microsecond=0) - timedelta(hours=48)
    with db.read() as conn:
        rows = intake_counts.series(conn, start, 1)
    out: dict[tuple[str, str], int] = {}
    for _, source, metric, n in rows:
        out[source, metric] = out.get((source, metric), 0) + n
    return out


def delivery(clock: VirtualClock, outcome: str, reason: str | None = None) -> Delivery:
    return Delivery(
        at=clock.now(),
        source="brevo",
        route="/webhooks/brevo",
        outcome=outcome,
        status_code=401 if reason else 202,
        reason=reason,
        detail="signature does not match" if reason else None,
        event_ids=[] if reason else [7],
        body=b'{"token": "secret-value", "event": "delivered"}',
        headers={"authorization": "Basic abc", "content-type": "application/json"},
        client_addr="203.0.113.5",
    )


def test_flushes_add_up_and_the_inbox_keeps_the_newest(db: Database, clock: VirtualClock) -> None:
    tally = IntakeTally(db, clock, inbox_keep=100)
    now = clock.now()
    tally.stored([{"received_at": now, "source": "brevo", "type": "email.opened"}] * 3)
    tally.delivery(delivery(clock, "accepted"))
    tally.delivery(delivery(clock, "rejected", "bad_signature"))
    assert tally.flush() == 3
    # A second process (or a later flush) adds to the same rows.
    other = IntakeTally(db, clock, inbox_keep=100)
    other.stored([{"received_at": now, "source": "brevo", "type": "email.opened"}])
    other.delivery(delivery(clock, "rejected", "bad_signature"))
    other.flush()
    assert counts(db, clock) == {
        ("brevo", "event:email.opened"): 4,
        ("brevo", "delivery:accepted"): 1,
        ("brevo", "rejected:bad_signature"): 2,
    }
    assert tally.flush() == 0  # nothing new
    with db.read() as conn:
        rows = inbox.recent(conn)
        last = intake_counts.last_accepted(conn, now - timedelta(days=1))
    assert last == {"brevo": now}
    assert [r["outcome"] for r in rows] == ["rejected", "rejected", "accepted"]
    rejected = rows[0]
    assert rejected["payload"] is not None and "secret-value" not in rejected["payload"]
    assert rejected["headers"]["authorization"] == "[redacted]"
    assert rows[2]["payload"] is None and rows[2]["event_ids"] == [7]


def test_the_inbox_is_bounded(db: Database, clock: VirtualClock) -> None:
    tally = IntakeTally(db, clock, inbox_keep=100)
    for _ in range(3):
        for _ in range(80):
            tally.delivery(delivery(clock, "accepted"))
        tally.flush()
    with db.read() as conn:
        rows = inbox.recent(conn, limit=1000)
    assert len(rows) == 100


def test_a_failed_flush_keeps_the_counts_for_the_next(db: Database, clock: VirtualClock) -> None:
    tally = IntakeTally(db, clock)
    tally.delivery(delivery(clock, "accepted"))

    @contextmanager
    def down() -> Iterator[object]:
        raise StorageUnavailable("database unavailable")
        yield  # pragma: no cover

    with mock.patch.object(db, "begin", down):
        assert tally.flush() == 0
    tally.delivery(delivery(clock, "accepted"))
    assert tally.flush() == 1
    assert counts(db, clock) == {("brevo", "delivery:accepted"): 2}
    with db.read() as conn:
        assert len(inbox.recent(conn)) == 2


def test_old_roll_ups_are_pruned(db: Database, clock: VirtualClock) -> None:
    tally = IntakeTally(db, clock)
    tally.delivery(delivery(clock, "accepted"))
    tally.flush()
    clock.advance(RETENTION + timedelta(hours=2))
    tally.delivery(delivery(clock, "duplicate"))
    tally.flush()
    with db.read() as conn:
        rows = intake_counts.series(conn, clock.now() - RETENTION * 2, 24)
    assert [(source, metric) for _, source, metric, _ in rows] == [("brevo", "delivery:duplicate")]


def test_series_sums_hours_into_periods(db: Database, clock: VirtualClock) -> None:
    start = clock.now().replace(minute=0, second=0, microsecond=0)
    tally = IntakeTally(db, clock)
    for hours in (0, 1, 5, 6, 7, 13):
        at = start + timedelta(hours=hours, minutes=30)
        tally.stored([{"received_at": at, "source": "track", "type": "page.viewed"}])
    tally.flush()
    with db.read() as conn:
        six = sorted(intake_counts.series(conn, start, 6))
        one = sorted(intake_counts.series(conn, start + timedelta(hours=5), 1))
    assert six == [
        (0, "track", "event:page.viewed", 3),
        (1, "track", "event:page.viewed", 2),
        (2, "track", "event:page.viewed", 1),
    ]
    assert one == [
        (0, "track", "event:page.viewed", 1),
        (1, "track", "event:page.viewed", 1),
        (2, "track", "event:page.viewed", 1),
        (8, "track", "event:page.viewed", 1),
    ]


def test_counts_ride_on_the_ingest_commit_when_due(db: Database, clock: VirtualClock) -> None:
    tally = IntakeTally(db, clock, every=3600)
    tally.delivery(delivery(clock, "accepted"))
    with db.begin() as conn:
        assert tally.write_in(conn) == 0  # not due yet: nothing written
    tally.every = 0
    with db.begin() as conn:
        assert tally.write_in(conn) == 1
    assert counts(db, clock) == {("brevo", "delivery:accepted"): 1}
    # A failure of the counts fails only them: the ingest transaction goes on and commits.
    tally.delivery(delivery(clock, "accepted"))
    with (
        mock.patch.object(intake_counts, "add", side_effect=RuntimeError("boom")),
        db.begin() as conn,
    ):
        assert tally.write_in(conn) == 0
        inbox.add(conn, [], 10)
    assert tally.flush() == 1  # kept for the next write
    assert counts(db, clock) == {("brevo", "delivery:accepted"): 2}
