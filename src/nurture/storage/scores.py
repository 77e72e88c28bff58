"""The score ledger: every lead-score change with the rule and event that caused it."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection, insert, select

from nurture.storage.schema import score_ledger


def append(conn: Connection, rows: Sequence[dict[str, Any]]) -> None:
    if rows:
        conn.execute(insert(score_ledger), list(rows))


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
