"""RFM figures on contacts (bulk write-back of the full pass) and the scoring baseline."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, delete, insert, select, text

from nurture.schema.tables import rfm_baselines


def write_documents(conn: Connection, rows: Sequence[tuple[int, str]]) -> None:
    """Store ``(contact id, rfm JSON text)`` pairs on the contacts, in one round trip or one
    prepared statement: a Python loop of ORM updates is what made the prototype take minutes."""
    if not rows:
        return
    if conn.dialect.name == "postgresql":
        ids = [r[0] for r in rows]
        docs = [r[1] for r in rows]
        conn.exec_driver_sql(
            "UPDATE contacts SET rfm = v.doc::jsonb FROM "
            "(SELECT unnest(%s::bigint[]) AS id, unnest(%s::text[]) AS doc) AS v "
            "WHERE contacts.id = v.id",
            (ids, docs),
        )
        return
    conn.exec_driver_sql(
        "UPDATE contacts SET rfm = ? WHERE id = ?", [(doc, cid) for cid, doc in rows]
    )


def clear_without_orders(conn: Connection) -> int:
    """Contacts whose orders are all gone lose their figures. A contact created without any
    holds a JSON ``null`` (what the JSON column stores for ``None``), not SQL NULL: that is no
    figure to clear, and counting it would report every non-buyer as "cleared" once."""
    json_null = "'null'::jsonb" if conn.dialect.name == "postgresql" else "'null'"
    result = conn.execute(
        text(
            f"UPDATE contacts SET rfm = NULL WHERE rfm IS NOT NULL AND rfm != {json_null} "
            "AND id NOT IN (SELECT contact_id FROM orders)"
        )
    )
    return int(result.rowcount or 0)


def save_baseline(conn: Connection, distribution: dict[str, Any], now: datetime) -> None:
    conn.execute(delete(rfm_baselines))
    contacts = int(distribution.get("contacts", 0))
    conn.execute(
        insert(rfm_baselines).values(computed_at=now, contacts=contacts, distribution=distribution)
    )


def load_baseline(conn: Connection) -> dict[str, Any] | None:
    row = conn.execute(
        select(rfm_baselines.c.distribution, rfm_baselines.c.computed_at)
        .order_by(rfm_baselines.c.id.desc())
        .limit(1)
    ).first()
    if row is None:
        return None
    return {**row.distribution, "computed_at": row.computed_at}
