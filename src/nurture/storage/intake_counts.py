"""Hourly intake roll-ups (``intake_counts``): written additively, read by time range."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Integer, cast, delete, extract, func, literal, select

from nurture.schema.tables import intake_counts
from nurture.schema.types import UtcDateTime
from nurture.storage.dialect import upsert


def add(conn: Connection, rows: Sequence[dict[str, Any]]) -> None:
    """Add ``count`` to each (bucket, source, metric); several processes may add at once."""
    if not rows:
        return
    stmt = upsert(conn, intake_counts)
    latest = func.greatest if conn.dialect.name == "postgresql" else func.max
    stmt = stmt.on_conflict_do_update(
        index_elements=[intake_counts.c.bucket, intake_counts.c.source, intake_counts.c.metric],
        set_={
            "count": intake_counts.c.count + stmt.excluded.count,
            "last_at": latest(intake_counts.c.last_at, stmt.excluded.last_at),
        },
    )
    conn.execute(stmt, list(rows))


def series(conn: Connection, start: datetime, step_hours: int) -> list[tuple[int, str, str, int]]:
    """``(period, source, metric, count)`` from ``start`` (an hour) on, summed in the database
    into periods of ``step_hours`` (period 0 starts at ``start``): a few hundred small tuples for
    a week, read by the primary key's leading ``bucket``."""
    origin = literal(start, UtcDateTime())
    if conn.dialect.name == "postgresql":
        hours: Any = extract("epoch", intake_counts.c.bucket - origin) / 3600
        period: Any = func.floor(func.round(hours) / step_hours)
    else:
        hours = (func.julianday(intake_counts.c.bucket) - func.julianday(origin)) * 24
        period = cast(func.round(hours) / step_hours, Integer)
    query = (
        select(
            period, intake_counts.c.source, intake_counts.c.metric, func.sum(intake_counts.c.count)
        )
        .where(intake_counts.c.bucket >= start)
        .group_by(period, intake_counts.c.source, intake_counts.c.metric)
    )
    return [(int(r[0]), r[1], r[2], int(r[3])) for r in conn.execute(query)]


def last_accepted(conn: Connection, since: datetime) -> dict[str, datetime]:
    """Per source, the last accepted webhook request since ``since`` (a range of the primary
    key; ``intake.tally`` prunes rows older than its ``RETENTION``)."""
    query = (
        select(intake_counts.c.source, func.max(intake_counts.c.last_at))
        .where(intake_counts.c.bucket >= since, intake_counts.c.metric == "delivery:accepted")
        .group_by(intake_counts.c.source)
    )
    return {r[0]: r[1] for r in conn.execute(query)}


def prune(conn: Connection, before: datetime) -> int:
    result = conn.execute(delete(intake_counts).where(intake_counts.c.bucket < before))
    return int(result.rowcount)
