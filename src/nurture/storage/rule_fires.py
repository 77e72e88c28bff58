"""When each rule last fired for a contact (``once`` limits)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import Connection, select

from nurture.storage.dialect import upsert
from nurture.storage.schema import rule_fires


def last_fired(conn: Connection, contact_id: int, rule_ids: Sequence[str]) -> dict[str, datetime]:
    if not rule_ids:
        return {}
    rows = conn.execute(
        select(rule_fires.c.rule_id, rule_fires.c.last_at).where(
            rule_fires.c.contact_id == contact_id, rule_fires.c.rule_id.in_(list(rule_ids))
        )
    )
    return {r.rule_id: r.last_at for r in rows}


def record(conn: Connection, contact_id: int, rule_ids: Sequence[str], now: datetime) -> None:
    if not rule_ids:
        return
    stmt = upsert(conn, rule_fires)
    stmt = stmt.on_conflict_do_update(
        index_elements=[rule_fires.c.contact_id, rule_fires.c.rule_id],
        set_={"count": rule_fires.c.count + 1, "last_at": stmt.excluded.last_at},
    )
    conn.execute(
        stmt,
        [
            {"contact_id": contact_id, "rule_id": r, "count": 1, "first_at": now, "last_at": now}
            for r in rule_ids
        ],
    )
