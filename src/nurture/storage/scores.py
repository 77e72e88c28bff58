"""The score ledger: every lead-score change with the rule and event that caused it."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection, select

from nurture.database.encode import json_text, sqlite_time
from nurture.schema.tables import score_ledger

_COLUMNS = (
    "contact_id",
    "event_id",
    "rule_id",
    "action_index",
    "component",
    "delta",
    "reason",
    "score_before",
    "score_after",
    "at",
)


def _sql(mark: str) -> str:
    values = ", ".join([mark] * len(_COLUMNS))
    return f"INSERT INTO score_ledger ({', '.join(_COLUMNS)}) VALUES ({values})"


_SQLITE_INSERT = _sql("?")
# The rows as one JSON array (orjson encodes it in C): one short statement per batch, prepared
# once. (One array per column through unnest() had psycopg dump every element in Python.)
_POSTGRESQL_INSERT = (
    f"INSERT INTO score_ledger ({', '.join(_COLUMNS)}) "
    f"SELECT {', '.join('r.' + c for c in _COLUMNS)} FROM json_to_recordset(%s::json) AS r("
    "contact_id bigint, event_id bigint, rule_id text, action_index int, component text, "
    "delta int, reason text, score_before int, score_after int, at timestamptz)"
)


def append(conn: Connection, rows: Sequence[dict[str, Any]]) -> None:
    """Insert ledger rows (the rules step: once per batch of events). Written at the driver
    level: the Core statement's compile and per-value type processing cost several times the
    insert itself. ``at`` is encoded as ``UtcDateTime`` would (SQLite: fixed-width UTC text)."""
    if not rows:
        return
    if conn.dialect.name == "sqlite":
        params = [
            tuple(sqlite_time(r[c]) if c == "at" else r.get(c) for c in _COLUMNS) for r in rows
        ]
        conn.exec_driver_sql(_SQLITE_INSERT, params)
    else:
        for r in rows:
            if r["at"].tzinfo is None:
                raise ValueError(f"naive value for a UTC column: {r['at']!r}")
        # As they are: the record type takes its columns by name and ignores other keys.
        conn.exec_driver_sql(_POSTGRESQL_INSERT, (json_text(rows),))


def applied(conn: Connection, event_id: int) -> set[tuple[str, int]]:
    """``(rule_id, action_index)`` already scored for ``event_id`` (a replay must not re-score)."""
    rows = conn.execute(
        select(score_ledger.c.rule_id, score_ledger.c.action_index).where(
            score_ledger.c.event_id == event_id, score_ledger.c.rule_id.is_not(None)
        )
    )
    return {(r.rule_id, r.action_index) for r in rows}


def for_contact(conn: Connection, contact_id: int, *, limit: int = 200) -> list[dict[str, Any]]:
    """The newest ``limit`` rows, oldest first."""
    stmt = (
        select(score_ledger)
        .where(score_ledger.c.contact_id == contact_id)
        .order_by(score_ledger.c.id.desc())
        .limit(limit)
    )
    rows = [dict(r) for r in conn.execute(stmt).mappings()]
    rows.reverse()
    return rows
