"""The product catalogue: learnt from order lines, names kept up to date."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, select

from nurture.schema.tables import products
from nurture.storage.dialect import insert_ignore, upsert


def remember(conn: Connection, names: dict[str, str | None], now: datetime) -> None:
    """Make sure every product key exists; a known label fills a missing name."""
    if not names:
        return
    rows = [{"key": k, "name": v, "updated_at": now} for k, v in names.items()]
    conn.execute(insert_ignore(conn, products), rows)
    named = [r for r in rows if r["name"]]
    if named:
        stmt = upsert(conn, products)
        stmt = stmt.on_conflict_do_update(
            index_elements=[products.c.key],
            set_={"name": stmt.excluded.name, "updated_at": stmt.excluded.updated_at},
            where=products.c.name.is_(None),
        )
        conn.execute(stmt, named)


def catalogue(conn: Connection, keys: Sequence[str] | None = None) -> dict[str, dict[str, Any]]:
    """``{key: {name, category, price_band, active}}`` (all products, or the keys given)."""
    stmt = select(
        products.c.key,
        products.c.name,
        products.c.category,
        products.c.price_band,
        products.c.active,
    )
    if keys is not None:
        if not keys:
            return {}
        stmt = stmt.where(products.c.key.in_(list(keys)))
    return {r.key: dict(r._mapping) for r in conn.execute(stmt)}
