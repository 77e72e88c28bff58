"""Hourly intake roll-ups (``intake_counts``): written additively, read by time range."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, func, select

from nurture.schema.tables import intake_counts
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


def since(conn: Connection, start: datetime) -> list[dict[str, Any]]:
    """Every roll-up row from ``start`` (an hour) on; the primary key leads with the bucket."""
    query = (
        select(
            intake_counts.c.bucket,
            intake_counts.c.source,
            intake_counts.c.metric,
            intake_counts.c.count,
            intake_counts.c.last_at,
        )
        .where(intake_counts.c.bucket >= start)
        .order_by(intake_counts.c.bucket)
    )
    return [dict(r) for r in conn.execute(query).mappings()]


def last_accepted(conn: Connection) -> dict[str, datetime]:
    """Per source, when a webhook request was last accepted, however long ago."""
    query = (
        select(intake_counts.c.source, func.max(intake_counts.c.last_at))
        .where(intake_counts.c.metric == "delivery:accepted")
        .group_by(intake_counts.c.source)
    )
    return {r[0]: r[1] for r in conn.execute(query)}
