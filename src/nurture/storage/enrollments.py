"""Enrollments, their steps and the tombstones of cancelled or moved bookings."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import orjson
from sqlalchemy import Connection, and_, bindparam, case, func, literal, select, update

from nurture.schema.tables import (
    contacts,
    enrollment_steps,
    enrollment_tombstones,
    enrollments,
    messages,
)
from nurture.storage.dialect import insert_ignore

ACTIVE = "active"
ENDED = ("completed", "exited", "cancelled")
STEP_STATUSES = ("scheduled", "sent", "skipped", "cancelled")

# Enrolling is on the signup path (SPEC §7: >= 1,000 signups/s with every step planned), so
# its inserts are written at the driver level with values encoded here: compiling a Core
# statement and running each value through its type cost more than the insert itself.
# Everything else goes through Core.
_LIVE_COLUMNS = (
    "sequence_id",
    "key",
    "contact_id",
    "status",
    "anchor_at",
    "enrolled_at",
    "event_id",
    "rule_id",
    "reschedules",
)
_STEP_COLUMNS = ("enrollment_id", "step_id", "position", "status", "due_at", "reason", "updated_at")
_TIMES = frozenset({"anchor_at", "enrolled_at", "due_at", "updated_at"})
# PostgreSQL types for parameters that have no target column to take theirs from (a SELECT
# list, arrays): a NULL event_id would otherwise be text.
_PG_TYPES = {
    "sequence_id": "varchar",
    "key": "varchar",
    "contact_id": "bigint",
    "status": "varchar",
    "anchor_at": "timestamptz",
    "enrolled_at": "timestamptz",
    "event_id": "bigint",
    "rule_id": "varchar",
    "reschedules": "integer",
    "enrollment_id": "bigint",
    "step_id": "varchar",
    "position": "integer",
    "due_at": "timestamptz",
    "reason": "text",
    "updated_at": "timestamptz",
}


class _Times:
    """Bind values for ``UtcDateTime`` columns, as that type would encode them; the rows of one
    statement share their times (``now``), so each distinct one is encoded once."""

    __slots__ = ("_seen", "_sqlite")

    def __init__(self, sqlite: bool) -> None:
        self._sqlite = sqlite
        self._seen: dict[datetime, Any] = {}

    def __call__(self, value: Any) -> Any:
        # The same refusal as ``UtcDateTime``: a naive time would silently shift by the offset.
        if not isinstance(value, datetime) or value.tzinfo is None:
            raise ValueError(f"naive or non-datetime value for a UTC column: {value!r}")
        if not self._sqlite:
            return value
        out = self._seen.get(value)
        if out is None:
            utc = value if value.tzinfo is UTC else value.astimezone(UTC)
            # What SQLAlchemy's SQLite DATETIME writes, so these rows sort with Core's.
            out = self._seen[value] = utc.isoformat(" ", "microseconds")[:26]
        return out


def _encode(row: dict[str, Any], columns: Sequence[str], times: _Times) -> list[Any]:
    return [times(row[c]) if c in _TIMES else row.get(c) for c in columns]


def _live_sql(mark: str, cast: bool) -> str:
    """The enrollment insert; the tombstone check rides along (parameters: the columns, then
    sequence_id and key again)."""
    values = ", ".join(f"{mark}::{_PG_TYPES[c]}" if cast else mark for c in _LIVE_COLUMNS)
    names = ", ".join(f'"{c}"' for c in _LIVE_COLUMNS)
    return (
        f"INSERT INTO enrollments ({names}) SELECT {values} WHERE NOT EXISTS "
        f'(SELECT 1 FROM enrollment_tombstones WHERE sequence_id = {mark} AND "key" = {mark}) '
        "ON CONFLICT DO NOTHING RETURNING id"
    )


_SQLITE_LIVE = _live_sql("?", cast=False)
_POSTGRESQL_LIVE = _live_sql("%s", cast=True)
# PostgreSQL: steps travel as one JSON array, one statement text whatever their number (prepared
# once, and short enough for psycopg's query cache, which skips statements over 50 parameters);
# orjson encodes them far faster than psycopg encodes the same values as parameters or arrays.
_POSTGRESQL_STEPS = (
    f"INSERT INTO enrollment_steps ({', '.join(_STEP_COLUMNS)}) "
    f"SELECT {', '.join('v.' + c for c in _STEP_COLUMNS)} "
    "FROM jsonb_to_recordset(%s::jsonb) AS v("
    + ", ".join(f"{c} {_PG_TYPES[c]}" for c in _STEP_COLUMNS)
    + ")"
)


# PostgreSQL: a batch's enrollments in one statement; the same tombstone check and partial unique
# index decide as for one (``insert_live``).
_QUOTED = [f'"{c}"' for c in _LIVE_COLUMNS]
_POSTGRESQL_LIVE_MANY = (
    f"INSERT INTO enrollments (id, {', '.join(_QUOTED)}) "
    f"SELECT v.id, {', '.join('v.' + c for c in _QUOTED)} "
    "FROM jsonb_to_recordset(%s::jsonb) AS v(id bigint, "
    + ", ".join(f'"{c}" {_PG_TYPES[c]}' for c in _LIVE_COLUMNS)
    + ") WHERE NOT EXISTS (SELECT 1 FROM enrollment_tombstones AS t "
    'WHERE t.sequence_id = v.sequence_id AND t."key" = v."key") '
    "ON CONFLICT DO NOTHING RETURNING id"
)
_POSTGRESQL_RESERVE = (
    "SELECT nextval(pg_get_serial_sequence('enrollments', 'id')) FROM generate_series(1, %s)"
)


@functools.lru_cache(maxsize=32)
def _insert_steps_sql(sqlite: bool, count: int) -> str:
    mark = "?" if sqlite else "%s"
    one = "(" + ", ".join([mark] * len(_STEP_COLUMNS)) + ")"
    names = ", ".join(_STEP_COLUMNS)
    return f"INSERT INTO enrollment_steps ({names}) VALUES " + ", ".join([one] * count)


# -- enrollments -----------------------------------------------------------------------------


def insert_live(conn: Connection, values: dict[str, Any]) -> int | None:
    """Insert an active enrollment; ``None``, and nothing written, when one is already live for
    (sequence, key) or a tombstone stands for that key (``tombstone`` tells which). Its steps
    follow through ``insert_steps`` (the event processor writes a whole batch's at once).

    The partial unique index decides, so two concurrent signups cannot both enroll.
    """
    sqlite = conn.dialect.name == "sqlite"
    params = _encode({**values, "status": ACTIVE}, _LIVE_COLUMNS, _Times(sqlite))
    params += [values["sequence_id"], values["key"]]
    row = conn.exec_driver_sql(_SQLITE_LIVE if sqlite else _POSTGRESQL_LIVE, tuple(params)).first()
    return int(row[0]) if row is not None else None


def reserve_ids(conn: Connection, count: int) -> list[int]:
    """``count`` new enrollment ids in one round trip, for ``insert_live_many``; none on SQLite,
    whose insert of one costs no round trip. An id never used leaves a gap, as a rollback does."""
    if conn.dialect.name != "postgresql":
        return []
    return [int(r[0]) for r in conn.exec_driver_sql(_POSTGRESQL_RESERVE, (count,)).all()]


def insert_live_many(conn: Connection, rows: Sequence[dict[str, Any]]) -> set[int]:
    """``insert_live`` for many enrollments with reserved ids, in one statement (PostgreSQL);
    returns the ids inserted (a refused row is left out, as ``insert_live`` leaves it out)."""
    if not rows:
        return set()
    times = _Times(sqlite=False)
    records = []
    for row in rows:
        record = {c: times(row[c]) if c in _TIMES else row.get(c) for c in _LIVE_COLUMNS}
        record["id"], record["status"] = row["id"], ACTIVE
        records.append(record)
    result = conn.exec_driver_sql(_POSTGRESQL_LIVE_MANY, (orjson.dumps(records).decode(),))
    return {int(r[0]) for r in result}


def get(conn: Connection, enrollment_id: int, *, lock: bool = False) -> dict[str, Any] | None:
    stmt = select(enrollments).where(enrollments.c.id == enrollment_id)
    if lock and conn.dialect.name == "postgresql":
        stmt = stmt.with_for_update()
    row = conn.execute(stmt).mappings().first()
    return dict(row) if row is not None else None


def live(conn: Connection, sequence_id: str, key: str) -> dict[str, Any] | None:
    stmt = select(enrollments).where(
        enrollments.c.sequence_id == sequence_id,
        enrollments.c.key == key,
        enrollments.c.status == ACTIVE,
    )
    if conn.dialect.name == "postgresql":
        stmt = stmt.with_for_update()
    row = conn.execute(stmt).mappings().first()
    return dict(row) if row is not None else None


def latest(conn: Connection, sequence_id: str, key: str) -> dict[str, Any] | None:
    row = (
        conn.execute(
            select(enrollments)
            .where(enrollments.c.sequence_id == sequence_id, enrollments.c.key == key)
            .order_by(enrollments.c.id.desc())
            .limit(1)
        )
        .mappings()
        .first()
    )
    return dict(row) if row is not None else None


def live_for_contact(
    conn: Connection, contact_id: int, sequence_ids: Sequence[str] | None = None
) -> list[dict[str, Any]]:
    # One statement built once, filtered here: an exit_on event (every purchase, unsubscribe,
    # booking) asks this, and building the statement, or re-rendering an expanding IN list,
    # cost more than running it. A contact has a handful of live enrollments at most.
    rows = [dict(r) for r in conn.execute(_LIVE_FOR_CONTACT, {"cid": contact_id}).mappings()]
    if sequence_ids is None:
        return rows
    wanted = set(sequence_ids)
    return [r for r in rows if r["sequence_id"] in wanted]


_LIVE_FOR_CONTACT = (
    select(enrollments)
    .where(enrollments.c.contact_id == bindparam("cid"), enrollments.c.status == ACTIVE)
    .order_by(enrollments.c.id)
)


def end(conn: Connection, enrollment_id: int, status: str, reason: str, now: datetime) -> bool:
    """Move a live enrollment to ``status``; False if it had already ended (compare-and-set)."""
    if status not in ENDED:
        raise ValueError(f"not an end status: {status}")
    result = conn.execute(
        update(enrollments)
        .where(enrollments.c.id == enrollment_id, enrollments.c.status == ACTIVE)
        .values(status=status, ended_at=now, end_reason=reason[:300])
    )
    return bool(result.rowcount)


def reanchor(
    conn: Connection, enrollment_id: int, key: str, anchor_at: datetime, event_id: int | None
) -> None:
    conn.execute(
        update(enrollments)
        .where(enrollments.c.id == enrollment_id)
        .values(
            key=key,
            anchor_at=anchor_at,
            event_id=event_id,
            reschedules=enrollments.c.reschedules + 1,
        )
    )


def search(
    conn: Connection,
    sequence_id: str,
    *,
    status: str | None = None,
    contact_id: int | None = None,
    before_id: int | None = None,
    limit: int = 50,
) -> list[dict[str, Any]]:
    stmt = select(enrollments).where(enrollments.c.sequence_id == sequence_id)
    if status is not None:
        stmt = stmt.where(enrollments.c.status == status)
    if contact_id is not None:
        stmt = stmt.where(enrollments.c.contact_id == contact_id)
    if before_id is not None:
        stmt = stmt.where(enrollments.c.id < before_id)
    stmt = stmt.order_by(enrollments.c.id.desc()).limit(limit)
    return [dict(r) for r in conn.execute(stmt).mappings()]


def for_contact(conn: Connection, contact_id: int) -> list[dict[str, Any]]:
    stmt = (
        select(enrollments).where(enrollments.c.contact_id == contact_id).order_by(enrollments.c.id)
    )
    return [dict(r) for r in conn.execute(stmt).mappings()]


def status_counts(conn: Connection) -> dict[str, dict[str, int]]:
    """``{sequence_id: {status: n}}``."""
    out: dict[str, dict[str, int]] = {}
    rows = conn.execute(
        select(enrollments.c.sequence_id, enrollments.c.status, func.count()).group_by(
            enrollments.c.sequence_id, enrollments.c.status
        )
    )
    for sequence_id, status, n in rows:
        out.setdefault(sequence_id, {})[status] = int(n)
    return out


def end_reasons(conn: Connection, sequence_id: str) -> dict[str, dict[str, int]]:
    """``{status: {reason: n}}`` for ended enrollments of a sequence."""
    out: dict[str, dict[str, int]] = {}
    rows = conn.execute(
        select(enrollments.c.status, enrollments.c.end_reason, func.count())
        .where(enrollments.c.sequence_id == sequence_id, enrollments.c.status != ACTIVE)
        .group_by(enrollments.c.status, enrollments.c.end_reason)
    )
    for status, reason, n in rows:
        out.setdefault(status, {})[reason or ""] = int(n)
    return out


# -- steps -----------------------------------------------------------------------------------


def insert_steps(conn: Connection, rows: Sequence[dict[str, Any]]) -> None:
    """New steps (``_STEP_COLUMNS``; ``ran_at``, ``sent_at`` and ``template`` start empty), in
    one statement per 1,000 rows on SQLite (7 bound variables a row: far below its 32,766), and
    in one statement on PostgreSQL (a JSON array, as the enrollment's own insert sends them)."""
    if not rows:
        return
    sqlite = conn.dialect.name == "sqlite"
    times = _Times(sqlite)
    if not sqlite:
        steps = [{c: times(r[c]) if c in _TIMES else r.get(c) for c in _STEP_COLUMNS} for r in rows]
        conn.exec_driver_sql(_POSTGRESQL_STEPS, (orjson.dumps(steps).decode(),))
        return
    for start in range(0, len(rows), 1000):
        chunk = rows[start : start + 1000]
        params: list[Any] = []
        for row in chunk:
            params += _encode(row, _STEP_COLUMNS, times)
        conn.exec_driver_sql(_insert_steps_sql(sqlite, len(chunk)), tuple(params))


def steps(conn: Connection, enrollment_ids: Sequence[int]) -> dict[int, list[dict[str, Any]]]:
    out: dict[int, list[dict[str, Any]]] = {i: [] for i in enrollment_ids}
    if not enrollment_ids:
        return out
    rows = conn.execute(
        select(enrollment_steps)
        .where(enrollment_steps.c.enrollment_id.in_(list(enrollment_ids)))
        .order_by(enrollment_steps.c.enrollment_id, enrollment_steps.c.position)
    ).mappings()
    for r in rows:
        out[r["enrollment_id"]].append(dict(r))
    return out


def get_step(conn: Connection, enrollment_id: int, step_id: str) -> dict[str, Any] | None:
    row = (
        conn.execute(
            select(enrollment_steps).where(
                enrollment_steps.c.enrollment_id == enrollment_id,
                enrollment_steps.c.step_id == step_id,
            )
        )
        .mappings()
        .first()
    )
    return dict(row) if row is not None else None


def update_step(
    conn: Connection,
    enrollment_id: int,
    step_id: str,
    values: dict[str, Any],
    *,
    only_if: str | None = "scheduled",
) -> bool:
    """Change one step; by default only while it is still ``scheduled`` (compare-and-set)."""
    conds = [
        enrollment_steps.c.enrollment_id == enrollment_id,
        enrollment_steps.c.step_id == step_id,
    ]
    if only_if is not None:
        conds.append(enrollment_steps.c.status == only_if)
    result = conn.execute(update(enrollment_steps).where(and_(*conds)).values(**values))
    return bool(result.rowcount)


def cancel_steps(conn: Connection, enrollment_id: int, reason: str, now: datetime) -> int:
    result = conn.execute(
        update(enrollment_steps)
        .where(
            enrollment_steps.c.enrollment_id == enrollment_id,
            enrollment_steps.c.status == "scheduled",
        )
        .values(status="cancelled", reason=reason, updated_at=now)
    )
    return int(result.rowcount)


def scheduled_left(conn: Connection, enrollment_id: int) -> int:
    return int(
        conn.execute(
            select(func.count()).where(
                enrollment_steps.c.enrollment_id == enrollment_id,
                enrollment_steps.c.status == "scheduled",
            )
        ).scalar_one()
    )


def funnel(conn: Connection, sequence_id: str) -> dict[str, dict[str, int]]:
    """``{step_id: {status: n}}`` over every enrollment of a sequence."""
    out: dict[str, dict[str, int]] = {}
    rows = conn.execute(
        select(enrollment_steps.c.step_id, enrollment_steps.c.status, func.count())
        .join(enrollments, enrollments.c.id == enrollment_steps.c.enrollment_id)
        .where(enrollments.c.sequence_id == sequence_id)
        .group_by(enrollment_steps.c.step_id, enrollment_steps.c.status)
    )
    for step_id, status, n in rows:
        out.setdefault(step_id, {})[status] = int(n)
    return out


# -- tombstones ------------------------------------------------------------------------------


def add_tombstone(
    conn: Connection,
    sequence_id: str,
    key: str,
    reason: str,
    event_id: int | None,
    now: datetime,
) -> None:
    conn.execute(
        insert_ignore(conn, enrollment_tombstones).values(
            sequence_id=sequence_id, key=key, reason=reason, event_id=event_id, created_at=now
        )
    )


def tombstone(conn: Connection, sequence_id: str, key: str) -> dict[str, Any] | None:
    row = (
        conn.execute(
            select(enrollment_tombstones).where(
                enrollment_tombstones.c.sequence_id == sequence_id,
                enrollment_tombstones.c.key == key,
            )
        )
        .mappings()
        .first()
    )
    return dict(row) if row is not None else None


# -- the console's funnel --------------------------------------------------------------------


def _segment_of(segmentation: str | None) -> Any:
    """The routing segment of the enrolled contact ('' when none), or '' for every row."""
    if segmentation is None:
        return literal("")
    return func.coalesce(contacts.c.segments[segmentation].as_string(), "")


def _by_segment(stmt: Any, segmentation: str | None) -> Any:
    if segmentation is None:
        return stmt
    return stmt.join(contacts, contacts.c.id == enrollments.c.contact_id)


def funnel_enrollments(
    conn: Connection, sequence_id: str, segmentation: str | None
) -> list[tuple[str, str, str, int]]:
    """``(segment, status, end_reason, n)`` for every enrollment of a sequence."""
    segment = _segment_of(segmentation).label("segment")
    stmt = _by_segment(
        select(segment, enrollments.c.status, enrollments.c.end_reason, func.count()).where(
            enrollments.c.sequence_id == sequence_id
        ),
        segmentation,
    ).group_by(segment, enrollments.c.status, enrollments.c.end_reason)
    return [(s, st, r or "", int(n)) for s, st, r, n in conn.execute(stmt)]


def funnel_steps(
    conn: Connection, sequence_id: str, segmentation: str | None
) -> list[tuple[str, str, str, int]]:
    """``(segment, step_id, step status, n)`` over the steps of a sequence's enrollments."""
    segment = _segment_of(segmentation).label("segment")
    stmt = (
        _by_segment(
            select(segment, enrollment_steps.c.step_id, enrollment_steps.c.status, func.count())
            .select_from(enrollments)
            .join(enrollment_steps, enrollment_steps.c.enrollment_id == enrollments.c.id)
            .where(enrollments.c.sequence_id == sequence_id),
            segmentation,
        )
    ).group_by(segment, enrollment_steps.c.step_id, enrollment_steps.c.status)
    return [(s, step, st, int(n)) for s, step, st, n in conn.execute(stmt)]


def funnel_engagement(
    conn: Connection, sequence_id: str, segmentation: str | None
) -> list[tuple[str, int, int]]:
    """``(segment, enrollments with an opened message, with a clicked one)``: each enrollment
    counts once however many of its messages were opened (``ix_messages_enrollment``)."""
    per = (
        select(
            messages.c.enrollment_id.label("enrollment_id"),
            func.max(case((messages.c.opened_at.is_not(None), 1), else_=0)).label("opened"),
            func.max(case((messages.c.clicked_at.is_not(None), 1), else_=0)).label("clicked"),
        )
        .join(enrollments, enrollments.c.id == messages.c.enrollment_id)
        .where(enrollments.c.sequence_id == sequence_id)
        .group_by(messages.c.enrollment_id)
        .subquery()
    )
    segment = _segment_of(segmentation).label("segment")
    stmt = _by_segment(
        select(segment, func.sum(per.c.opened), func.sum(per.c.clicked))
        .select_from(per)
        .join(enrollments, enrollments.c.id == per.c.enrollment_id),
        segmentation,
    ).group_by(segment)
    return [(s, int(o or 0), int(c or 0)) for s, o, c in conn.execute(stmt)]
