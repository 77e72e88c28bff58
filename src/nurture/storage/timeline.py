"""Every event and every change on a contact, with the rule that made it."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, case, func, literal_column, select

from nurture.database.encode import json_text, sqlite_time
from nurture.schema.tables import timeline

_COLUMNS = ("contact_id", "event_id", "at", "kind", "rule_id", "detail")
_SQLITE_INSERT = f"INSERT INTO timeline ({', '.join(_COLUMNS)}) VALUES (?, ?, ?, ?, ?, ?)"
# The rows as one JSON array (orjson encodes it in C): one short statement, prepared once.
_POSTGRESQL_INSERT = (
    f"INSERT INTO timeline ({', '.join(_COLUMNS)}) "
    f"SELECT {', '.join('r.' + c for c in _COLUMNS)} FROM jsonb_to_recordset(%s::jsonb) AS "
    "r(contact_id bigint, event_id bigint, at timestamptz, kind text, rule_id text, detail jsonb)"
)


def append(conn: Connection, rows: Sequence[dict[str, Any]]) -> None:
    """Timeline rows (the processor: once per batch, several per event). Driver level: the
    Core insert's per-value type processing cost more than the insert itself."""
    if not rows:
        return
    if conn.dialect.name == "sqlite":
        times: dict[Any, str | None] = {}  # a batch's rows share a handful of times
        params = []
        for r in rows:
            at = r["at"]
            text = times.get(at)
            if text is None:
                text = times[at] = sqlite_time(at)
            params.append(
                (
                    r["contact_id"],
                    r.get("event_id"),
                    text,
                    r["kind"],
                    r.get("rule_id"),
                    json_text(r["detail"]),
                )
            )
        conn.exec_driver_sql(_SQLITE_INSERT, params)
        return
    for r in rows:
        if r["at"].tzinfo is None:
            raise ValueError(f"naive value for a UTC column: {r['at']!r}")
    # The rows as they are: the record type takes its columns by name and ignores other keys.
    conn.exec_driver_sql(_POSTGRESQL_INSERT, (json_text(rows),))


def for_contact(
    conn: Connection, contact_id: int, *, before_id: int | None = None, limit: int = 100
) -> list[dict[str, Any]]:
    stmt = (
        select(timeline)
        .where(timeline.c.contact_id == contact_id)
        .order_by(timeline.c.id.desc())
        .limit(limit)
    )
    if before_id is not None:
        stmt = stmt.where(timeline.c.id < before_id)
    return [dict(r) for r in conn.execute(stmt).mappings()]


def for_event(conn: Connection, event_id: int) -> list[dict[str, Any]]:
    stmt = select(timeline).where(timeline.c.event_id == event_id).order_by(timeline.c.id)
    return [dict(r) for r in conn.execute(stmt).mappings()]


# The partial index ``ix_timeline_rule_fired`` holds only these rows; SQLite uses a partial
# index only when the query spells its condition with the same literal, not a parameter.
_FIRED = timeline.c.kind == literal_column("'rule.fired'")


def rule_fire_counts(
    conn: Connection, rule_ids: Sequence[str], since: Sequence[datetime]
) -> dict[str, list[int]]:
    """``{rule_id: [n since each of ``since``]}``: how often each rule acted on an event (its
    ``rule.fired`` notes), each a range of ``ix_timeline_rule_fired``."""
    out: dict[str, list[int]] = {}
    for rule_id in rule_ids:
        cols = [func.count(case((timeline.c.at >= s, 1))) for s in since]
        row = conn.execute(
            select(*cols).where(_FIRED, timeline.c.rule_id == rule_id, timeline.c.at >= min(since))
        ).one()
        out[rule_id] = [int(n) for n in row]
    return out


def rule_last_fired(conn: Connection, rule_ids: Sequence[str]) -> dict[str, datetime]:
    """When each rule last acted on an event: one index lookup per rule."""
    out: dict[str, datetime] = {}
    for rule_id in rule_ids:
        at = conn.execute(
            select(func.max(timeline.c.at)).where(_FIRED, timeline.c.rule_id == rule_id)
        ).scalar_one_or_none()
        if at is not None:
            out[rule_id] = at
    return out
