"""When each rule last fired for a contact (``once``), and what acted on an event (replays)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import Connection, select

from nurture.schema.tables import rule_fires, timeline
from nurture.storage.dialect import upsert


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


# Timeline kinds written in the transaction that applied a rule's actions for an event: the
# event's ``rule.fired`` note, or ``rule.applied`` for a delayed action coming due.
APPLIED_KINDS = ("rule.fired", "rule.applied")


def event_history(conn: Connection, contact_id: int, event_id: int) -> tuple[bool, set[str]]:
    """Was ``event_id`` already processed for this contact, and which rules acted on it.

    The timeline is the record: the processor writes the ``event`` note and the rules step its
    ``rule.fired`` notes in the transaction that applies their effects, so a row here means the
    effects were committed, and a replayed event must not apply them again.
    """
    rows = conn.execute(
        select(timeline.c.kind, timeline.c.rule_id).where(
            timeline.c.contact_id == contact_id, timeline.c.event_id == event_id
        )
    ).all()
    rules = {r.rule_id for r in rows if r.kind in APPLIED_KINDS and r.rule_id is not None}
    return bool(rows), rules
