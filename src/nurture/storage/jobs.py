"""The ``jobs`` table: durable timers with leases, claimed by any number of workers.

Every statement that changes a job's status is conditional on the status it expects, so a
cancel, a reschedule and a claim racing on one row resolve to exactly one winner: PostgreSQL
row locks (``FOR UPDATE SKIP LOCKED`` for the claim) and SQLite's single writer
(``BEGIN IMMEDIATE``) serialise them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Connection,
    Engine,
    String,
    and_,
    bindparam,
    case,
    event,
    func,
    or_,
    select,
    text,
    update,
)

from nurture.storage.dialect import insert_ignore
from nurture.storage.engine import Database
from nurture.storage.schema import jobs
from nurture.storage.types import UtcDateTime

log = logging.getLogger("nurture.jobs")

STATUSES = ("scheduled", "running", "done", "failed", "dead", "cancelled")
# ``failed`` is a retry waiting for its ``run_at``: claimable exactly like ``scheduled``.
DUE = ("scheduled", "failed")
CHANNEL = "nurture_jobs"
# Spelled as literals, exactly like the partial indexes' predicates: a bound parameter in their
# place keeps SQLite (and PostgreSQL's generic plans) from using those indexes, and the claim
# would then scan every pending timer.
IS_DUE = text("jobs.status IN ('scheduled', 'failed')")
IS_RUNNING = text("jobs.status = 'running'")
_NOTED = "nurture.jobs.noted"

COLUMNS = (
    jobs.c.id,
    jobs.c.kind,
    jobs.c.key,
    jobs.c.status,
    jobs.c.run_at,
    jobs.c.attempts,
    jobs.c.max_attempts,
    jobs.c.lease_until,
    jobs.c.worker,
    jobs.c.payload,
    jobs.c.last_error,
    jobs.c.contact_id,
    jobs.c.enrollment_id,
    jobs.c.cancelled_at,
    jobs.c.created_at,
    jobs.c.updated_at,
)


# -- enqueue ---------------------------------------------------------------------------------


def insert(conn: Connection, row: dict[str, Any]) -> int | None:
    """Insert a new job; ``None`` when its key already exists (nothing is changed then)."""
    stmt = insert_ignore(conn, jobs).returning(jobs.c.id)
    return conn.execute(stmt, row).scalar_one_or_none()


def insert_many(conn: Connection, rows: Sequence[dict[str, Any]]) -> int:
    """Insert jobs whose keys are new, in one round trip per batch; returns how many were new."""
    if not rows:
        return 0
    if conn.dialect.name == "sqlite":
        # sqlite3's executemany reports the rows it really inserted; psycopg's does not.
        return int(conn.execute(insert_ignore(conn, jobs), list(rows)).rowcount)
    result = conn.execute(insert_ignore(conn, jobs).returning(jobs.c.id), list(rows))
    return len(result.all())


def replace_unstarted(conn: Connection, key: str, values: dict[str, Any]) -> bool:
    """Overwrite a job that never started (or was cancelled) with new values, as new."""
    result = conn.execute(
        update(jobs)
        .where(
            jobs.c.key == key,
            or_(
                and_(jobs.c.status == "scheduled", jobs.c.attempts == 0),
                jobs.c.status == "cancelled",
            ),
        )
        .values(
            **values,
            status="scheduled",
            attempts=0,
            lease_until=None,
            worker=None,
            last_error=None,
            cancelled_at=None,
        )
    )
    return result.rowcount == 1


def note_enqueued(conn: Connection, run_at: datetime) -> None:
    """Announce a new ``run_at`` to sleeping workers when the transaction commits.

    PostgreSQL: ``NOTIFY`` is transactional, so it is delivered at commit or never. It is sent
    only when this transaction has not already announced an earlier time, so a batch of
    100,000 timers costs one notification. SQLite: the commit hook installed by
    ``on_commit`` reads the earliest time noted here.
    """
    txn = conn.get_transaction()
    noted = conn.info.get(_NOTED)
    if noted is not None and noted[0] is txn and noted[1] <= run_at:
        return
    conn.info[_NOTED] = (txn, run_at)
    if conn.dialect.name == "postgresql":
        conn.execute(
            text("SELECT pg_notify(:channel, :payload)"),
            {"channel": CHANNEL, "payload": run_at.isoformat()},
        )


def on_commit(engine: Engine, callback: Callable[[datetime], None]) -> Callable[[], None]:
    """Call ``callback(earliest run_at)`` when a transaction that enqueued jobs commits.

    SQLAlchemy's ``commit`` event fires just before the commit, while the SQLite write lock is
    still held: a worker woken by it claims in a ``BEGIN IMMEDIATE`` transaction, which waits
    for this commit to finish and then sees the new rows.
    """

    def _commit(conn: Connection) -> None:
        noted = conn.info.pop(_NOTED, None)
        if noted is not None:
            callback(noted[1])

    def _rollback(conn: Connection) -> None:
        conn.info.pop(_NOTED, None)

    event.listen(engine, "commit", _commit)
    event.listen(engine, "rollback", _rollback)

    def remove() -> None:
        event.remove(engine, "commit", _commit)
        event.remove(engine, "rollback", _rollback)

    return remove


# -- cancel and move ---------------------------------------------------------------------------


def _cancel_values(now: datetime) -> dict[str, Any]:
    # A running attempt keeps its status and finishes; ``cancelled_at`` stops any further one.
    return {
        "status": case((jobs.c.status == "running", "running"), else_="cancelled"),
        "cancelled_at": now,
        "updated_at": now,
    }


CANCELLABLE = ("scheduled", "failed", "running", "dead")


def cancel(conn: Connection, key: str, now: datetime) -> bool:
    result = conn.execute(
        update(jobs)
        .where(jobs.c.key == key, jobs.c.status.in_(CANCELLABLE), jobs.c.cancelled_at.is_(None))
        .values(**_cancel_values(now))
    )
    return result.rowcount == 1


def cancel_id(conn: Connection, job_id: int, now: datetime) -> bool:
    result = conn.execute(
        update(jobs)
        .where(jobs.c.id == job_id, jobs.c.status.in_(CANCELLABLE), jobs.c.cancelled_at.is_(None))
        .values(**_cancel_values(now))
    )
    return result.rowcount == 1


def cancel_where(
    conn: Connection,
    now: datetime,
    *,
    contact_id: int | None = None,
    enrollment_id: int | None = None,
    kinds: Sequence[str] | None = None,
) -> int:
    conds: list[ColumnElement[bool]] = [
        jobs.c.status.in_(CANCELLABLE),
        jobs.c.cancelled_at.is_(None),
    ]
    if contact_id is not None:
        conds.append(jobs.c.contact_id == contact_id)
    if enrollment_id is not None:
        conds.append(jobs.c.enrollment_id == enrollment_id)
    if kinds is not None:
        conds.append(jobs.c.kind.in_(list(kinds)))
    result = conn.execute(update(jobs).where(*conds).values(**_cancel_values(now)))
    return int(result.rowcount)


def reschedule(conn: Connection, key: str, run_at: datetime, now: datetime) -> bool:
    """Move a job that is waiting to run; a running, finished or cancelled job stays as it is."""
    result = conn.execute(
        update(jobs)
        .where(jobs.c.key == key, jobs.c.status.in_(DUE))
        .values(run_at=run_at, updated_at=now)
    )
    return result.rowcount == 1


def retry(conn: Connection, job_id: int, now: datetime) -> str | None:
    """Run a dead or failed job again now, with fresh attempts. Returns the status it had."""
    current: str | None = conn.execute(
        select(jobs.c.status).where(jobs.c.id == job_id)
    ).scalar_one_or_none()
    if current not in ("dead", "failed"):
        return current
    conn.execute(
        update(jobs)
        .where(jobs.c.id == job_id, jobs.c.status == current)
        .values(
            status="scheduled",
            attempts=0,
            run_at=now,
            lease_until=None,
            last_error=None,
            cancelled_at=None,
            updated_at=now,
        )
    )
    return current


# -- claim, heartbeat, finish ------------------------------------------------------------------


def claim(
    conn: Connection,
    *,
    kinds: Sequence[str],
    now: datetime,
    lease_until: datetime,
    worker: str,
    limit: int,
) -> list[dict[str, Any]]:
    """Take up to ``limit`` due jobs of ``kinds``, earliest first, leasing them to ``worker``."""
    if not kinds or limit <= 0:
        return []
    due = (
        select(jobs.c.id)
        .where(IS_DUE, jobs.c.run_at <= now, jobs.c.kind.in_(list(kinds)))
        .order_by(jobs.c.run_at)
        .limit(limit)
    )
    if conn.dialect.name == "postgresql":
        due = due.with_for_update(skip_locked=True)

    stmt = (
        update(jobs)
        .where(jobs.c.id.in_(due.scalar_subquery()))
        .values(
            status="running",
            attempts=jobs.c.attempts + 1,
            lease_until=lease_until,
            worker=worker,
            updated_at=now,
        )
        .returning(*COLUMNS)
    )
    rows = [dict(r) for r in conn.execute(stmt).mappings()]
    rows.sort(key=lambda r: (r["run_at"], r["id"]))
    return rows


def extend_leases(
    conn: Connection, leases: Sequence[tuple[int, int]], worker: str, lease_until: datetime
) -> int:
    """Heartbeat: push the lease of ``(job id, attempt)`` pairs this worker still holds."""
    if not leases:
        return 0
    result = conn.execute(
        update(jobs)
        .where(
            jobs.c.id == bindparam("b_id"),
            jobs.c.attempts == bindparam("b_attempt"),
            jobs.c.status == "running",
            jobs.c.worker == worker,
        )
        .values(lease_until=lease_until),
        # Rows are locked in id order everywhere, so a heartbeat and a finish never deadlock.
        [{"b_id": job_id, "b_attempt": attempt} for job_id, attempt in sorted(set(leases))],
    )
    return int(result.rowcount)


def finish(conn: Connection, outcomes: Sequence[dict[str, Any]], worker: str) -> None:
    """Record attempts' outcomes in one statement per batch.

    Each outcome: ``id``, ``attempt``, ``status`` (done / failed / dead / scheduled), ``run_at``
    (the retry time, or ``None`` to keep it), ``error``, ``now``. The update only lands while
    this worker still holds that attempt's lease: once a lease expired and the job was taken
    again, a late finish of the old attempt changes nothing. A cancel that arrived during the
    attempt turns every outcome but ``done`` into ``cancelled``.
    """
    if not outcomes:
        return
    status = bindparam("b_status", type_=String())
    conn.execute(
        update(jobs)
        .where(
            jobs.c.id == bindparam("b_id"),
            jobs.c.attempts == bindparam("b_attempt"),
            jobs.c.status == "running",
            jobs.c.worker == worker,
        )
        .values(
            status=case(
                (and_(jobs.c.cancelled_at.is_not(None), status != "done"), "cancelled"),
                else_=status,
            ),
            run_at=func.coalesce(bindparam("b_run_at", type_=UtcDateTime()), jobs.c.run_at),
            attempts=jobs.c.attempts - bindparam("b_refund"),
            lease_until=None,
            last_error=bindparam("b_error"),
            updated_at=bindparam("b_now", type_=UtcDateTime()),
        ),
        [
            {
                "b_id": o["id"],
                "b_attempt": o["attempt"],
                "b_status": o["status"],
                "b_run_at": o.get("run_at"),
                "b_refund": 1 if o.get("refund") else 0,
                "b_error": o.get("error"),
                "b_now": o["now"],
            }
            for o in sorted(outcomes, key=lambda o: o["id"])
        ],
    )


def reap_expired(conn: Connection, now: datetime) -> int:
    """Jobs whose worker vanished (lease expired) become due again, or cancelled if asked."""
    result = conn.execute(
        update(jobs)
        .where(IS_RUNNING, jobs.c.lease_until < now)
        .values(
            status=case((jobs.c.cancelled_at.is_not(None), "cancelled"), else_="failed"),
            run_at=now,
            lease_until=None,
            last_error="lease expired: the worker stopped before finishing",
            updated_at=now,
        )
    )
    return int(result.rowcount)


def next_run_at(conn: Connection, kinds: Sequence[str]) -> datetime | None:
    """The earliest ``run_at`` of a waiting job of ``kinds`` (the worker sleeps until then)."""
    if not kinds:
        return None
    value: datetime | None = conn.execute(
        select(jobs.c.run_at)
        .where(IS_DUE, jobs.c.kind.in_(list(kinds)))
        .order_by(jobs.c.run_at)
        .limit(1)
    ).scalar_one_or_none()
    return value


# -- reading ---------------------------------------------------------------------------------


def get(conn: Connection, job_id: int) -> dict[str, Any] | None:
    row = conn.execute(select(*COLUMNS).where(jobs.c.id == job_id)).mappings().first()
    return dict(row) if row else None


def get_by_key(conn: Connection, key: str) -> dict[str, Any] | None:
    row = conn.execute(select(*COLUMNS).where(jobs.c.key == key)).mappings().first()
    return dict(row) if row else None


def search(
    conn: Connection,
    *,
    status: str | None = None,
    kind: str | None = None,
    contact_id: int | None = None,
    before_id: int | None = None,
    limit: int = 50,
) -> list[dict[str, Any]]:
    stmt = select(*COLUMNS).order_by(jobs.c.id.desc()).limit(limit)
    if status:
        stmt = stmt.where(jobs.c.status == status)
    if kind:
        stmt = stmt.where(jobs.c.kind == kind)
    if contact_id is not None:
        stmt = stmt.where(jobs.c.contact_id == contact_id)
    if before_id is not None:
        stmt = stmt.where(jobs.c.id < before_id)
    return [dict(r) for r in conn.execute(stmt).mappings()]


def count_by_status(conn: Connection) -> dict[str, int]:
    rows = conn.execute(select(jobs.c.status, func.count()).group_by(jobs.c.status))
    return {r[0]: r[1] for r in rows}


def oldest_due(conn: Connection, now: datetime) -> tuple[int, datetime | None]:
    """How many jobs are due and not yet taken, and the ``run_at`` of the oldest of them."""
    row = conn.execute(
        select(func.count(), func.min(jobs.c.run_at)).where(IS_DUE, jobs.c.run_at <= now)
    ).one()
    oldest: datetime | None = row[1]
    return int(row[0]), oldest


# -- PostgreSQL notifications --------------------------------------------------------------------


async def listen(
    db: Database, on_message: Callable[[str | None], None], stop: asyncio.Event
) -> None:
    """Deliver ``NOTIFY nurture_jobs`` payloads to ``on_message`` until ``stop`` (PostgreSQL).

    On a lost connection it reconnects with backoff and calls ``on_message(None)`` so the
    worker looks at the table again: notifications sent while disconnected are gone.
    """
    import psycopg  # only PostgreSQL installs need the driver

    dsn = db.engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
    backoff = 0.5
    while not stop.is_set():
        try:
            aconn = await psycopg.AsyncConnection.connect(dsn, autocommit=True)
            async with aconn:
                await aconn.execute(f"LISTEN {CHANNEL}")
                backoff = 0.5
                on_message(None)
                async for note in aconn.notifies():
                    on_message(note.payload)
        except (psycopg.Error, OSError) as exc:
            log.warning(
                "job notifications lost; reconnecting",
                extra={"action": "jobs.listen_error", "error": str(exc)},
            )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), backoff)
            backoff = min(backoff * 2, 10.0)
