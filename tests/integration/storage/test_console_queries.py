"""The console's index-backed reads of jobs and messages (SQLite and PostgreSQL)."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import insert, update

from nurture.clock import VirtualClock
from nurture.database.engine import Database
from nurture.jobs import schedule
from nurture.schema.tables import jobs, messages
from nurture.storage import jobs as job_store
from nurture.storage import messages as message_store


def job(db: Database, key: str, run_in: timedelta, clock: VirtualClock, status: str = "") -> int:
    with db.begin() as conn:
        ref = schedule.enqueue(
            conn,
            kind="send_email",
            key=key,
            run_at=clock.now() + run_in,
            payload={},
            now=clock.now(),
        )
        if status:
            conn.execute(update(jobs).where(jobs.c.id == ref.id).values(status=status))
    return ref.id


def test_queue_health_and_lateness(db: Database, clock: VirtualClock) -> None:
    job(db, "future", timedelta(hours=1), clock)
    job(db, "due-now", timedelta(seconds=0), clock)
    job(db, "late-30s", -timedelta(seconds=30), clock)
    job(db, "late-2h", -timedelta(hours=2), clock)
    job(db, "running", -timedelta(hours=3), clock, "running")
    dead = job(db, "dead", -timedelta(hours=3), clock, "dead")
    job(db, "done", -timedelta(hours=3), clock, "done")
    with db.read() as conn:
        health = job_store.queue_health(conn, clock.now(), timedelta(seconds=60))
        histogram = job_store.lateness_histogram(
            conn, clock.now(), [timedelta(seconds=1), timedelta(minutes=1), timedelta(hours=1)]
        )
        dead_rows = job_store.dead(conn)
        late_rows = job_store.most_late(conn, clock.now())
        running_rows = job_store.running(conn)
        counted = job_store.count_by_kind_status(conn)
    assert health == {
        "waiting": 4,
        "due": 3,
        "late": 1,
        "oldest_due": clock.now() - timedelta(hours=2),
        "running": 1,
        "dead": 1,
    }
    assert histogram == [1, 1, 0, 1]
    assert [r["id"] for r in dead_rows] == [dead]
    assert [r["key"] for r in late_rows] == ["late-2h", "late-30s", "due-now"]
    assert [r["key"] for r in running_rows] == ["running"]
    assert counted == {
        ("send_email", "scheduled"): 4,
        ("send_email", "running"): 1,
        ("send_email", "dead"): 1,
        ("send_email", "done"): 1,
    }


def test_sent_per_period(db: Database, clock: VirtualClock) -> None:
    now = clock.now()
    hour = now.replace(minute=0, second=0, microsecond=0)
    rows = [
        {
            "key": f"m{i}",
            "channel": "email",
            "provider": "console",
            "status": "sent",
            "transactional": False,
            "created_at": now,
            "updated_at": now,
            "sent_at": at,
        }
        for i, at in enumerate(
            [
                hour - timedelta(minutes=10),
                hour + timedelta(minutes=5),
                hour + timedelta(minutes=50),
                hour - timedelta(days=3),
            ]
        )
    ]
    with db.begin() as conn:
        conn.execute(insert(messages), rows)
    with db.read() as conn:
        per_hour = message_store.sent_per_period(
            conn, [hour - timedelta(hours=1), hour, hour + timedelta(hours=1)]
        )
    assert per_hour == [1, 2]
