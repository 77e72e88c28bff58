"""The ``jobs`` table: durable timers with leases, claimed by any number of workers.

Every statement that changes a job's status is conditional on the status it expects, so a
cancel, a reschedule and a claim racing on one row resolve to exactly one winner: PostgreSQL
row locks (``FOR UPDATE SKIP LOCKED`` for the claim) and SQLite's single writer
(``BEGIN IMMEDIATE``) serialise them.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from sqlalchemy import (
    ColumnElement,
    Connection,
    Engine,
    String,
    TextClause,
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

from nurture.database import notify
from nurture.database.encode import json_text
from nurture.database.engine import Database
from nurture.schema.tables import jobs
from nurture.schema.types import UtcDateTime
from nurture.storage.dialect import insert_ignore

STATUSES = ("scheduled", "running", "done", "failed", "dead", "cancelled")
# ``failed`` is a retry waiting for its ``run_at``: claimable exactly like ``scheduled``.
DUE = ("scheduled", "failed")
CHANNEL = notify.JOBS
# A ``run_at`` further than this from its enqueue needs no NOTIFY: workers never sleep longer
# than this (``JobWorker`` caps its idle time to it) before reading the next ``run_at`` again.
WAKE_HORIZON = timedelta(seconds=60)
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


# The columns ``insert_many`` writes, in statement order.
INSERT_COLUMNS = (
    "kind",
    "key",
    "status",
    "run_at",
    "attempts",
    "max_attempts",
    "payload",
    "contact_id",
    "enrollment_id",
    "created_at",
    "updated_at",
)
# 11 bound variables a row: 1,000 rows stay far below SQLite's 32,766 per statement.
_SQLITE_CHUNK = 1000
_POSTGRESQL_CHUNK = 5000


def insert_many(conn: Connection, rows: Sequence[dict[str, Any]]) -> int:
    """Insert jobs whose keys are new; returns how many were new.

    A key already stored (or repeated in ``rows``: the first wins) is skipped and left as it
    is. Bulk scheduling (campaigns, imports, sequence enrollment) comes through here, so the
    statement is written at the driver level with values encoded here (orjson; SQLite: the
    fixed-width UTC text ``UtcDateTime`` reads back): compiling the Core statement and running
    every value through its type per batch cost more than the insert itself. One statement's
    row count is the number of rows it really inserted on both drivers, so no ``RETURNING``.
    """
    if not rows:
        return 0
    if conn.dialect.name == "sqlite":
        return _insert_many_sqlite(conn, rows)
    return _insert_many_postgresql(conn, rows)


def _row_values(row: dict[str, Any], when: _TimeEncoder, stamp: _TimeEncoder) -> tuple[Any, ...]:
    # In INSERT_COLUMNS order.
    get = row.get
    return (
        get("kind"),
        get("key"),
        get("status", "scheduled"),
        when(get("run_at")),
        get("attempts", 0),
        get("max_attempts"),
        orjson.dumps(get("payload"), default=str).decode(),
        get("contact_id"),
        get("enrollment_id"),
        stamp(get("created_at")),
        stamp(get("updated_at")),
    )


def _insert_many_sqlite(conn: Connection, rows: Sequence[dict[str, Any]]) -> int:
    # A multi-row VALUES list; sqlite3 caches the prepared statement per distinct SQL text.
    when, stamp = _TimeEncoder(sqlite=True), _TimeEncoder(sqlite=True)
    inserted = 0
    for start in range(0, len(rows), _SQLITE_CHUNK):
        chunk = rows[start : start + _SQLITE_CHUNK]
        params: list[Any] = []
        for row in chunk:
            params += _row_values(row, when, stamp)
        result = conn.exec_driver_sql(_sqlite_insert_sql(len(chunk)), tuple(params))
        inserted += int(result.rowcount)
    return inserted


def _insert_many_postgresql(conn: Connection, rows: Sequence[dict[str, Any]]) -> int:
    # The rows as one JSON array through jsonb_to_recordset(): a short statement PostgreSQL
    # prepares once, and orjson encodes the whole batch in C. (A VALUES list of 1,100
    # placeholders is past psycopg's query cache, re-parsed on every batch; one array per column
    # through unnest() had psycopg dump every element in Python, a quarter of a sequences batch.)
    when, stamp = _TimeEncoder(sqlite=False), _TimeEncoder(sqlite=False)
    inserted = 0
    for start in range(0, len(rows), _POSTGRESQL_CHUNK):
        records = []
        for row in rows[start : start + _POSTGRESQL_CHUNK]:
            get = row.get
            records.append(
                {
                    "kind": get("kind"),
                    "key": get("key"),
                    "status": get("status", "scheduled"),
                    "run_at": when(get("run_at")),
                    "attempts": get("attempts", 0),
                    "max_attempts": get("max_attempts"),
                    "payload": get("payload"),
                    "contact_id": get("contact_id"),
                    "enrollment_id": get("enrollment_id"),
                    "created_at": stamp(get("created_at")),
                    "updated_at": stamp(get("updated_at")),
                }
            )
        result = conn.exec_driver_sql(_POSTGRESQL_INSERT, (json_text(records),))
        inserted += int(result.rowcount)
    return inserted


class _TimeEncoder:
    """Bind values for ``UtcDateTime`` columns, as that type would encode them.

    A batch shares one ``created_at``/``updated_at``, so the last value is remembered.
    """

    __slots__ = ("_last", "_last_out", "_sqlite")

    def __init__(self, *, sqlite: bool) -> None:
        self._sqlite = sqlite
        self._last: Any = object()
        self._last_out: Any = None

    def __call__(self, value: Any) -> Any:
        if value is self._last:
            return self._last_out
        # The same refusal as UtcDateTime: a naive time would shift the job by the UTC offset.
        if not isinstance(value, datetime) or value.tzinfo is None:
            raise ValueError(f"naive or non-datetime value for a UTC column: {value!r}")
        out: Any = value
        if self._sqlite:
            # What SQLAlchemy's SQLite DATETIME writes ("YYYY-MM-DD HH:MM:SS.ffffff"), so the
            # text sorts chronologically beside rows written through Core.
            utc = value if value.tzinfo is UTC else value.astimezone(UTC)
            out = utc.isoformat(" ", "microseconds")[:26]
        self._last, self._last_out = value, out
        return out


@functools.lru_cache(maxsize=64)
def _sqlite_insert_sql(count: int) -> str:
    one = "(" + ", ".join("?" for _ in INSERT_COLUMNS) + ")"
    return (
        f"INSERT INTO jobs ({', '.join(INSERT_COLUMNS)}) VALUES "
        + ", ".join([one] * count)
        + " ON CONFLICT (key) DO NOTHING"
    )


_POSTGRESQL_INSERT = (
    f"INSERT INTO jobs ({', '.join(INSERT_COLUMNS)}) "
    f"SELECT {', '.join('r.' + c for c in INSERT_COLUMNS)} FROM jsonb_to_recordset(%s::jsonb) AS "
    "r(kind text, key text, status text, run_at timestamptz, attempts int, max_attempts int, "
    "payload jsonb, contact_id bigint, enrollment_id bigint, created_at timestamptz, "
    "updated_at timestamptz) "
    "ON CONFLICT (key) DO NOTHING"
)


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


@dataclass(slots=True)
class _Noted:
    """What this connection's current transaction announced (``conn.info[_NOTED]``)."""

    root: Any  # the root transaction this belongs to
    earliest: datetime  # for the SQLite commit hook
    sent_in: Any = None  # PostgreSQL: the (innermost) transaction that sent ``sent_at``
    sent_at: datetime | None = None


def note_enqueued(conn: Connection, run_at: datetime, now: datetime | None = None) -> None:
    """Announce a new ``run_at`` to sleeping workers when the transaction commits.

    PostgreSQL: ``NOTIFY`` is transactional, so it is delivered at commit or never. It is sent
    only when this transaction has not already announced an earlier time, so a batch of
    100,000 timers costs one notification, and not at all for a ``run_at`` more than
    ``WAKE_HORIZON`` after ``now``: no worker sleeps that long without looking at the table
    again, so only jobs due (nearly) now need one. SQLite: the commit hook installed by
    ``on_commit`` reads the earliest time noted here.
    """
    root = conn.get_transaction()
    noted = conn.info.get(_NOTED)
    if noted is None or noted.root is not root:
        noted = conn.info[_NOTED] = _Noted(root, run_at)
    elif run_at < noted.earliest:
        noted.earliest = run_at
    if conn.dialect.name != "postgresql":
        return
    if now is not None and run_at > now + WAKE_HORIZON:
        return
    # The innermost transaction: a NOTIFY inside a savepoint rolled back is discarded with it.
    inner = conn.get_nested_transaction() or root
    if noted.sent_in is inner and noted.sent_at is not None and noted.sent_at <= run_at:
        return
    noted.sent_in, noted.sent_at = inner, run_at
    notify.send(conn, CHANNEL, run_at.isoformat())


def on_commit(engine: Engine, callback: Callable[[datetime], None]) -> Callable[[], None]:
    """Call ``callback(earliest run_at)`` when a transaction that enqueued jobs commits.

    SQLAlchemy's ``commit`` event fires just before the commit, while the SQLite write lock is
    still held: a worker woken by it claims in a ``BEGIN IMMEDIATE`` transaction, which waits
    for this commit to finish and then sees the new rows.
    """

    def _commit(conn: Connection) -> None:
        noted = conn.info.pop(_NOTED, None)
        if noted is not None:
            callback(noted.earliest)

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
    if conn.dialect.name == "postgresql":
        # Lock in id order, as finishes and heartbeats do, so a bulk cancel racing a worker
        # finishing several of these jobs waits for it instead of deadlocking with it.
        locked = select(jobs.c.id).where(*conds).order_by(jobs.c.id).with_for_update()
        conds.append(jobs.c.id.in_(locked.scalar_subquery()))
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
    """Jobs whose worker vanished (lease expired) become due again, or cancelled if asked.

    PostgreSQL: rows another transaction holds (a late finish or heartbeat of that very job)
    are skipped, not waited for. A plain UPDATE would lock in lease order while finishes and
    heartbeats lock in id order, and the chaos test saw the resulting deadlocks; a row skipped
    now is reaped at the next pass if its lease is still expired then.
    """
    conds: list[ColumnElement[bool] | TextClause] = [IS_RUNNING, jobs.c.lease_until < now]
    if conn.dialect.name == "postgresql":
        expired = select(jobs.c.id).where(*conds).with_for_update(skip_locked=True)
        conds.append(jobs.c.id.in_(expired.scalar_subquery()))
    result = conn.execute(
        update(jobs)
        .where(*conds)
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


def due_by_kind(conn: Connection, now: datetime) -> dict[str, tuple[int, datetime]]:
    """Per kind: how many jobs are due and not yet taken, and the oldest ``run_at`` among them."""
    rows = conn.execute(
        select(jobs.c.kind, func.count(), func.min(jobs.c.run_at))
        .where(IS_DUE, jobs.c.run_at <= now)
        .group_by(jobs.c.kind)
    )
    return {r[0]: (int(r[1]), r[2]) for r in rows}


# -- PostgreSQL notifications --------------------------------------------------------------------


async def listen(
    db: Database, on_message: Callable[[str | None], None], stop: asyncio.Event
) -> None:
    """Deliver ``NOTIFY nurture_jobs`` payloads (a ``run_at``) to ``on_message`` (PostgreSQL).

    ``on_message(None)`` once listening and after each reconnect: look at the table again.
    """
    await notify.listen(db, {CHANNEL: on_message}, stop)


# -- the console's queue health (each count reads a partial index) -----------------------------


def queue_health(conn: Connection, now: datetime, late_after: timedelta) -> dict[str, Any]:
    """Waiting jobs, those due, those late (due for longer than ``late_after``) with the oldest
    one's ``run_at``, running and dead: five reads of ``ix_jobs_due``, ``ix_jobs_lease`` and
    ``ix_jobs_dead``."""
    waiting = conn.execute(select(func.count()).select_from(jobs).where(IS_DUE)).scalar_one()
    due, oldest = conn.execute(
        select(func.count(), func.min(jobs.c.run_at)).where(IS_DUE, jobs.c.run_at <= now)
    ).one()
    late = conn.execute(
        select(func.count()).select_from(jobs).where(IS_DUE, jobs.c.run_at <= now - late_after)
    ).scalar_one()
    running = conn.execute(
        select(func.count()).select_from(jobs).where(text("jobs.status = 'running'"))
    ).scalar_one()
    dead = conn.execute(
        select(func.count()).select_from(jobs).where(text("jobs.status = 'dead'"))
    ).scalar_one()
    return {
        "waiting": int(waiting),
        "due": int(due),
        "late": int(late),
        "oldest_due": oldest,
        "running": int(running),
        "dead": int(dead),
    }


def lateness_histogram(conn: Connection, now: datetime, edges: Sequence[timedelta]) -> list[int]:
    """Due jobs counted by how late they are: ``[0, edges[0])``, ``[edges[0], edges[1])``, ...,
    ``[edges[-1], ...)``; one range read of ``ix_jobs_due``."""
    cases = []
    bounds = [None, *edges, None]
    for low, high in itertools.pairwise(bounds):
        cond = []
        if low is not None:
            cond.append(jobs.c.run_at <= now - low)
        if high is not None:
            cond.append(jobs.c.run_at > now - high)
        cases.append(func.coalesce(func.sum(case((and_(*cond), 1), else_=0)), 0))
    row = conn.execute(select(*cases).where(IS_DUE, jobs.c.run_at <= now)).one()
    return [int(v) for v in row]


def dead(
    conn: Connection, *, kind: str | None = None, before_id: int | None = None, limit: int = 50
) -> list[dict[str, Any]]:
    """Dead jobs, newest first (``ix_jobs_dead``)."""
    stmt = (
        select(*COLUMNS).where(text("jobs.status = 'dead'")).order_by(jobs.c.id.desc()).limit(limit)
    )
    if kind:
        stmt = stmt.where(jobs.c.kind == kind)
    if before_id is not None:
        stmt = stmt.where(jobs.c.id < before_id)
    return [dict(r) for r in conn.execute(stmt).mappings()]


def most_late(conn: Connection, now: datetime, limit: int = 50) -> list[dict[str, Any]]:
    """Due jobs not yet taken, the longest-waiting first (``ix_jobs_due``)."""
    stmt = select(*COLUMNS).where(IS_DUE, jobs.c.run_at <= now).order_by(jobs.c.run_at).limit(limit)
    return [dict(r) for r in conn.execute(stmt).mappings()]


def running(conn: Connection, limit: int = 50) -> list[dict[str, Any]]:
    """Jobs being run, the lease ending first first (``ix_jobs_lease``)."""
    stmt = (
        select(*COLUMNS)
        .where(text("jobs.status = 'running'"))
        .order_by(jobs.c.lease_until)
        .limit(limit)
    )
    return [dict(r) for r in conn.execute(stmt).mappings()]


def count_by_kind_status(conn: Connection) -> dict[tuple[str, str], int]:
    """Every job counted by kind and status: a full read, so the console calls it in the
    background at most once a minute, never per page view; /metrics once per scrape."""
    rows = conn.execute(
        select(jobs.c.kind, jobs.c.status, func.count()).group_by(jobs.c.kind, jobs.c.status)
    )
    return {(r[0], r[1]): int(r[2]) for r in rows}
