"""Retention: statements that thin old rows out, one bounded batch each, and the file's space.

Each reads or changes at most the ``ids`` or ``limit`` rows it is given, by primary key or an
index. SQLite keeps the hole when an ``UPDATE`` shrinks a row (new rows go to new pages); only
a ``DELETE`` frees emptied pages. So on SQLite a row is thinned out by deleting it and inserting
it again, same id, without the value; PostgreSQL updates and (auto)vacuum reclaims.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
from sqlalchemy import (
    Connection,
    Table,
    bindparam,
    delete,
    func,
    literal_column,
    select,
    text,
    update,
)

from nurture.database.encode import read_sqlite_time
from nurture.database.engine import Database
from nurture.schema.tables import (
    deliveries,
    enrollments,
    events,
    jobs,
    retention_marks,
    score_ledger,
    timeline,
)
from nurture.storage.dialect import insert_ignore

FINISHED_JOBS = ("done", "cancelled")
TRIMMED = {"trimmed": True}  # a trimmed timeline row's detail, so a reader can tell
_TRIMMED = {"sqlite": "'{\"trimmed\":true}'", "postgresql": "'{\"trimmed\": true}'::jsonb"}
_EMPTY = {"sqlite": "'{}'", "postgresql": "'{}'::jsonb"}
_EVENT_COLUMNS = ("id", "status", "processed_at", "raw NOT NULL")


def _has_detail(dialect: str) -> str:
    return f"detail NOT IN ({_EMPTY[dialect]}, {_TRIMMED[dialect]})"


def take_mark(conn: Connection, name: str, now: datetime) -> int:
    """The last id handled for ``name`` (0 at first); on PostgreSQL locked until the transaction
    ends, so two passes walk a table one after the other."""
    conn.execute(insert_ignore(conn, retention_marks).values(name=name, last_id=0, updated_at=now))
    query = select(retention_marks.c.last_id).where(retention_marks.c.name == name)
    if conn.dialect.name == "postgresql":
        query = query.with_for_update()
    return int(conn.execute(query).scalar_one())


def read_mark(conn: Connection, name: str) -> int:
    query = select(retention_marks.c.last_id).where(retention_marks.c.name == name)
    return int(conn.execute(query).scalar_one_or_none() or 0)


def set_mark(conn: Connection, name: str, last_id: int, now: datetime) -> None:
    mark = retention_marks.c
    conn.execute(
        update(retention_marks)
        .where(mark.name == name, mark.last_id < last_id)
        .values(last_id=last_id, updated_at=now)
    )


def events_after(
    conn: Connection, after_id: int, limit: int
) -> list[tuple[int, str, datetime | None, bool]]:
    """``(id, status, processed_at, has_raw)`` of the next ``limit`` events by id."""
    e = events.c
    if conn.dialect.name == "sqlite":
        got = _sqlite_after(conn, "events", _EVENT_COLUMNS, after_id, limit)
        return [(r[0], r[1], read_sqlite_time(r[2]) if r[2] else None, bool(r[3])) for r in got]
    query = select(e.id, e.status, e.processed_at, e.raw.is_not(None).label("has_raw"))
    rows = conn.execute(query.where(e.id > after_id).order_by(e.id).limit(limit)).all()
    return [(r.id, r.status, r.processed_at, bool(r.has_raw)) for r in rows]


def clear_raw(conn: Connection, ids: Sequence[int]) -> int:
    """Drop the raw payload of these events if still processed; returns how many."""
    where = "status = 'processed' AND raw IS NOT NULL"
    if conn.dialect.name == "sqlite":
        return _rewrite(conn, events, ids, where, {"raw": "NULL"})
    stmt = update(events).where(events.c.id.in_(list(ids)), text(where)).values(raw=None)
    return int(conn.execute(stmt).rowcount) if ids else 0


def _below_newest(table: Table) -> Any:
    """Rows the history pass may delete: all but the newest. SQLite gives a new row the largest
    id plus one, so deleting the newest rows would hand their ids out again: to an event whose
    job keys (``rule:{event}:...``) old ``messages`` rows still hold (its e-mails would count as
    sent), and below the walks' marks (never pruned). PostgreSQL's sequences never reuse an id;
    the rule holds there too so both behave alike."""
    return table.c.id < select(func.max(table.c.id)).scalar_subquery()


# An event a live enrolment still reads (its steps' templates do) stays past the history window.
_HELD = "EXISTS (SELECT 1 FROM enrollments n WHERE n.event_id = events.id AND n.status = 'active')"


def events_held_after(
    conn: Connection, after_id: int, limit: int
) -> list[tuple[int, str, datetime | None, bool]]:
    """``(id, status, processed_at, held)`` of the next ``limit`` events by id; ``held``: a live
    enrolment reads it (``ix_enrollments_live_event``)."""
    e = events.c
    if conn.dialect.name == "sqlite":
        columns = ("id", "status", "processed_at", _HELD)
        got = _sqlite_after(conn, "events", columns, after_id, limit, spare_newest=True)
        return [(r[0], r[1], read_sqlite_time(r[2]) if r[2] else None, bool(r[3])) for r in got]
    held: Any = literal_column(_HELD).label("held")
    query = select(e.id, e.status, e.processed_at, held).where(
        e.id > after_id, _below_newest(events)
    )
    rows = conn.execute(query.order_by(e.id).limit(limit)).all()
    return [(r.id, r.status, r.processed_at, bool(r.held)) for r in rows]


def delete_events(conn: Connection, ids: Sequence[int]) -> int:
    """Delete these events if still processed; their dedupe keys go with them."""
    e = events.c
    stmt = delete(events).where(e.id.in_(list(ids)), e.status == "processed")
    return int(conn.execute(stmt).rowcount) if ids else 0


def released_events(conn: Connection, cutoff: datetime, limit: int) -> list[tuple[int, int | None]]:
    """``(id, contact_id)`` of events the history walk passed over because a live enrolment read
    them, which no live enrolment reads any more: processed before ``cutoff``, at or below the
    walk's mark (only the events it kept are left there, so this reads few rows)."""
    e = events.c
    mark = select(retention_marks.c.last_id).where(retention_marks.c.name == EVENTS_MARK)
    held: Any = literal_column(_HELD)
    query = (
        select(e.id, e.contact_id)
        .where(
            e.id <= mark.scalar_subquery(),
            e.status == "processed",
            e.processed_at < cutoff,
            ~held,
            _below_newest(events),
        )
        .order_by(e.id)
        .limit(limit)
    )
    return [(r.id, r.contact_id) for r in conn.execute(query)]


def timeline_of_events(conn: Connection, found: Sequence[tuple[int, int | None]]) -> list[int]:
    """Ids of the timeline rows of these ``(event, contact)`` pairs."""
    return _rows_of_events(conn, timeline, found)


def ledger_of_events(conn: Connection, found: Sequence[tuple[int, int | None]]) -> list[int]:
    """Ids of the score-ledger rows of these ``(event, contact)`` pairs."""
    return _rows_of_events(conn, score_ledger, found)


def _rows_of_events(
    conn: Connection, table: Table, found: Sequence[tuple[int, int | None]]
) -> list[int]:
    """Ids of ``table``'s rows (timeline, score ledger) of these ``(event, contact)`` pairs, found
    through the contact's index (neither table indexes ``event_id``)."""
    c = table.c
    ids: list[int] = []
    for event_id, contact_id in found:
        if contact_id is None:
            continue
        query = select(c.id).where(c.contact_id == contact_id, c.event_id == event_id)
        ids.extend(r.id for r in conn.execute(query))
    return ids


def _fate(table: str, extra: str = "") -> str:
    """What the history pass does with a row of ``table`` (an ``int`` in SQL): ``GONE`` when its
    event is no more or it never had one (nothing can replay it now: it goes); ``KEPT`` when its
    event stays for good (failed, or held by a live enrolment: replaying it reads the row);
    ``LATER`` when the events pass has not reached its event yet (the walk waits there)."""
    mark = f"(SELECT last_id FROM retention_marks WHERE name = '{EVENTS_MARK}')"
    return (
        f"CASE WHEN {table}.event_id IS NULL OR NOT EXISTS "
        f"(SELECT 1 FROM events x WHERE x.id = {table}.event_id) THEN {GONE} "
        f"WHEN {table}.event_id <= coalesce({mark}, 0) THEN {KEPT} ELSE {LATER} END{extra}"
    )


EVENTS_MARK = "events.deleted"
GONE, KEPT, LATER = 1, 0, 2


def _aged_after(
    conn: Connection, table: Table, after_id: int, limit: int, third: str, *, spare_newest: bool
) -> list[tuple[int, datetime, int]]:
    """``(id, at, third)`` of the next ``limit`` rows of ``table`` by id (``spare_newest``: not
    the table's newest row, see ``_below_newest``)."""
    c = table.c
    if conn.dialect.name == "sqlite":
        columns = ("id", "at", third)
        got = _sqlite_after(conn, table.name, columns, after_id, limit, spare_newest=spare_newest)
        return [(r[0], read_sqlite_time(r[1]), int(r[2])) for r in got]
    flag: Any = literal_column(third).label("flag")
    query = select(c.id, c.at, flag).where(c.id > after_id)
    if spare_newest:
        query = query.where(_below_newest(table))
    rows = conn.execute(query.order_by(c.id).limit(limit))
    return [(r.id, r.at, int(r.flag)) for r in rows]


def timeline_fate_after(
    conn: Connection, after_id: int, limit: int
) -> list[tuple[int, datetime, int]]:
    """``(id, at, fate)`` of the next ``limit`` timeline rows by id (``_fate``)."""
    return _aged_after(conn, timeline, after_id, limit, _fate("timeline"), spare_newest=True)


def delete_timeline(conn: Connection, ids: Sequence[int]) -> int:
    stmt = delete(timeline).where(timeline.c.id.in_(list(ids)))
    return int(conn.execute(stmt).rowcount) if ids else 0


# The row a contact's older score changes are summed into, one per component.
FOLDED = "earlier changes, summed by retention"


def ledger_fate_after(
    conn: Connection, after_id: int, limit: int
) -> list[tuple[int, datetime, int]]:
    """``(id, at, fate)`` of the next ``limit`` score-ledger rows by id (``_fate``); a sum
    already made is ``KEPT``."""
    folded = (
        f"CASE WHEN score_ledger.reason = '{FOLDED}' THEN {KEPT} ELSE {_fate('score_ledger')} END"
    )
    return _aged_after(conn, score_ledger, after_id, limit, folded, spare_newest=True)


def fold_ledger(conn: Connection, ids: Sequence[int]) -> int:
    """Sum these ledger rows into their contact's ``FOLDED`` row for the component (the oldest
    row becomes it when there is none yet) and delete them. Scores and their totals per component
    still add up; the per-rule detail of those changes is what goes. Returns rows folded."""
    if not ids:
        return 0
    s = score_ledger.c
    cols = (s.id, s.contact_id, s.component, s.delta, s.score_before, s.score_after, s.at)
    rows = conn.execute(select(*cols).where(s.id.in_(list(ids))).order_by(s.id)).all()
    if not rows:
        return 0
    groups: dict[tuple[int, str], list[Any]] = {}
    for r in rows:
        groups.setdefault((r.contact_id, r.component), []).append(r)
    carriers = {
        (c.contact_id, c.component): c
        for c in conn.execute(
            select(*cols)
            .where(s.contact_id.in_({k[0] for k in groups}), s.reason == FOLDED)
            .order_by(s.id)
        )
    }
    updates: list[dict[str, Any]] = []
    gone: list[int] = []
    for key, members in groups.items():
        carrier = carriers.get(key)
        if carrier is None:  # the first fold for this contact and component: the oldest row
            carrier, members = members[0], members[1:]
        last = members[-1] if members else carrier
        updates.append(
            {
                "carrier": carrier.id,
                "total": carrier.delta + sum(m.delta for m in members),
                "after": last.score_after,
                "last_at": max(carrier.at, last.at),
            }
        )
        gone.extend(m.id for m in members)
    stmt = (
        update(score_ledger)
        .where(s.id == bindparam("carrier"))
        .values(
            delta=bindparam("total"),
            score_after=bindparam("after"),
            at=bindparam("last_at"),
            reason=FOLDED,
            event_id=None,
            rule_id=None,
            action_index=None,
        )
    )
    conn.execute(stmt, updates)
    if gone:
        conn.execute(delete(score_ledger).where(s.id.in_(gone)))
    return len(rows)


def timeline_after(conn: Connection, after_id: int, limit: int) -> list[tuple[int, datetime, int]]:
    """``(id, at, has_detail)`` of the next ``limit`` timeline rows by id."""
    plain = f"CASE WHEN {_has_detail(conn.dialect.name)} THEN 1 ELSE 0 END"
    return _aged_after(conn, timeline, after_id, limit, plain, spare_newest=False)


def trim_detail(conn: Connection, ids: Sequence[int]) -> int:
    """Replace these rows' detail with ``TRIMMED`` (kind, time, rule and event stay)."""
    where = _has_detail(conn.dialect.name)
    if conn.dialect.name == "sqlite":
        return _rewrite(conn, timeline, ids, where, {"detail": _TRIMMED["sqlite"]})
    stmt = update(timeline).where(timeline.c.id.in_(list(ids)), text(where)).values(detail=TRIMMED)
    return int(conn.execute(stmt).rowcount) if ids else 0


def deliveries_after(conn: Connection, after_id: int, limit: int) -> list[tuple[int, datetime]]:
    """``(id, at)`` of the next ``limit`` outbound delivery-log rows by id."""
    d = deliveries.c
    if conn.dialect.name == "sqlite":
        got = _sqlite_after(conn, "deliveries", ("id", "at"), after_id, limit)
        return [(r[0], read_sqlite_time(r[1])) for r in got]
    rows = conn.execute(select(d.id, d.at).where(d.id > after_id).order_by(d.id).limit(limit))
    return [(r.id, r.at) for r in rows]


def delete_deliveries(conn: Connection, ids: Sequence[int]) -> int:
    stmt = delete(deliveries).where(deliveries.c.id.in_(list(ids)))
    return int(conn.execute(stmt).rowcount) if ids else 0


def _finished_before(cutoff: datetime) -> tuple[Any, ...]:
    # A sequence step's job may be planned again under its key while the enrolment is live (a
    # reschedule re-plans steps that have not run): such jobs stay whatever their age.
    live = select(enrollments.c.id).where(
        enrollments.c.id == jobs.c.enrollment_id, enrollments.c.status == "active"
    )
    return (jobs.c.status.in_(FINISHED_JOBS), jobs.c.updated_at < cutoff, ~live.exists())


def finished_jobs(conn: Connection, cutoff: datetime, limit: int) -> list[int]:
    """Done or cancelled jobs last changed before ``cutoff`` that no live enrolment holds,
    oldest first (``ix_jobs_finished``)."""
    query = select(jobs.c.id).where(*_finished_before(cutoff)).order_by(jobs.c.updated_at)
    return [r.id for r in conn.execute(query.limit(limit))]


def count_finished_jobs(conn: Connection, cutoff: datetime) -> int:
    query = select(func.count()).select_from(jobs).where(*_finished_before(cutoff))
    return int(conn.execute(query).scalar_one())


def delete_jobs(conn: Connection, ids: Sequence[int], cutoff: datetime) -> int:
    """Delete these jobs if still finished before ``cutoff`` (PostgreSQL re-checks a row another
    transaction changed meanwhile: a job revived by a reschedule stays)."""
    j = jobs.c
    stmt = delete(jobs).where(
        j.id.in_(list(ids)), j.status.in_(FINISHED_JOBS), j.updated_at < cutoff
    )
    return int(conn.execute(stmt).rowcount) if ids else 0


# The pass runs beside ingest and processing threads, holding the writer. The sqlite3 module
# takes the GIL back for every row it steps through, and in a busy process each of those waits
# behind the other threads (storage/events.py): 500 rows one by one held the writer ~300 ms
# (bench/retention.py). So on SQLite a batch is read as one JSON value and rewritten without
# a row coming back to Python.


def _sqlite_after(
    conn: Connection,
    table: str,
    columns: Sequence[str],
    after_id: int,
    limit: int,
    *,
    spare_newest: bool = False,
) -> list[list[Any]]:
    names = ", ".join(f"c{i}" for i in range(len(columns)))
    inner = ", ".join(f"{c} AS c{i}" for i, c in enumerate(columns))
    newest = f" AND id < (SELECT max(id) FROM {table})" if spare_newest else ""
    found = conn.exec_driver_sql(
        f"SELECT json_group_array(json_array({names})) FROM "
        f"(SELECT {inner} FROM {table} WHERE id > ?{newest} ORDER BY id LIMIT ?)",
        (after_id, limit),
    ).scalar_one()
    return sorted(orjson.loads(found), key=lambda r: r[0])


def _rewrite(
    conn: Connection, table: Table, ids: Sequence[int], where: str, values: dict[str, str]
) -> int:
    """SQLite: delete the rows and insert them again, same id, with ``values`` (SQL literals),
    through a temporary table of this connection, so every other value goes back as stored."""
    if not ids:
        return 0
    name, temp = table.name, f"temp.retention_{table.name}"
    picked = ", ".join(values.get(c.name, c.name) for c in table.columns)
    sql = conn.exec_driver_sql
    sql(f"CREATE TEMP TABLE IF NOT EXISTS retention_{name} AS SELECT * FROM {name} WHERE 0")
    sql(f"DELETE FROM {temp}")
    moved = sql(
        f"INSERT INTO {temp} SELECT {picked} FROM {name} "
        f"WHERE id IN (SELECT value FROM json_each(?)) AND {where}",
        (orjson.dumps(list(ids)).decode(),),
    ).rowcount
    sql(f"DELETE FROM {name} WHERE id IN (SELECT id FROM {temp})")
    sql(f"INSERT INTO {name} SELECT * FROM {temp}")
    return int(moved)


@dataclass(frozen=True)
class Space:
    """Database size. ``free_bytes``: SQLite pages kept for reuse. ``incremental``: SQLite can
    give pages back to the file system (``auto_vacuum=INCREMENTAL``); PostgreSQL: always."""

    bytes: int
    free_bytes: int
    incremental: bool


def space(conn: Connection) -> Space:
    if conn.dialect.name != "sqlite":
        size = conn.exec_driver_sql("SELECT pg_database_size(current_database())").scalar_one()
        return Space(int(size), 0, True)
    size, pages, free, mode = (
        int(conn.exec_driver_sql(f"PRAGMA {name}").scalar_one())
        for name in ("page_size", "page_count", "freelist_count", "auto_vacuum")
    )
    return Space(pages * size, free * size, mode == 2)


def free_pages(conn: Connection) -> int:
    return int(conn.exec_driver_sql("PRAGMA freelist_count").scalar_one())


def incremental_vacuum(conn: Connection, pages: int) -> None:
    """SQLite: give up to ``pages`` free pages back (the file shrinks at the next checkpoint).
    The pragma frees one page per step and the sqlite3 module steps a statement that returns
    no columns once, so it runs once per page, on the driver's cursor (a few µs each)."""
    cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
    try:
        for _ in range(pages):
            cursor.execute("PRAGMA incremental_vacuum(1)")
    finally:
        cursor.close()


def vacuum(db: Database) -> None:
    """SQLite: ``VACUUM`` rewrites the file compactly, and switches a file made before
    auto_vacuum was set to ``INCREMENTAL`` (the engine asks for it on every connection).
    PostgreSQL: ``VACUUM (ANALYZE)`` of the pruned tables. Neither runs in a transaction."""
    if db.is_sqlite:
        raw = db.engine.raw_connection()
        try:
            raw.driver_connection.execute("VACUUM")  # type: ignore[union-attr]
        finally:
            raw.close()
        return
    with db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.exec_driver_sql("VACUUM (ANALYZE) events, timeline, jobs, deliveries")
