"""Failed console logins per name and per address, for throttling."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, delete, select

from nurture.schema.tables import login_failures
from nurture.storage.dialect import upsert


def blocked_until(conn: Connection, keys: Sequence[str]) -> datetime | None:
    """The latest ``blocked_until`` among ``keys`` (None: nothing recorded)."""
    rows = conn.execute(
        select(login_failures.c.blocked_until).where(login_failures.c.key.in_(list(keys)))
    )
    found = [r[0] for r in rows if r[0] is not None]
    return max(found) if found else None


def get(conn: Connection, key: str) -> dict[str, Any] | None:
    row = conn.execute(select(login_failures).where(login_failures.c.key == key)).mappings().first()
    return dict(row) if row else None


def save(conn: Connection, key: str, failures: int, now: datetime, until: datetime | None) -> None:
    stmt = upsert(conn, login_failures).values(
        key=key, failures=failures, last_at=now, blocked_until=until
    )
    conn.execute(
        stmt.on_conflict_do_update(
            index_elements=[login_failures.c.key],
            set_={"failures": failures, "last_at": now, "blocked_until": until},
        )
    )


def clear(conn: Connection, keys: Sequence[str]) -> None:
    conn.execute(delete(login_failures).where(login_failures.c.key.in_(list(keys))))
