"""Console users: name, role and password hash (never the password)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Connection, insert, select, update

from nurture.schema.tables import console_users


def create(conn: Connection, *, name: str, role: str, password_hash: str, now: datetime) -> int:
    return int(
        conn.execute(
            insert(console_users)
            .values(
                name=name, role=role, password_hash=password_hash, created_at=now, updated_at=now
            )
            .returning(console_users.c.id)
        ).scalar_one()
    )


def by_name(conn: Connection, name: str) -> dict[str, Any] | None:
    row = conn.execute(select(console_users).where(console_users.c.name == name)).mappings().first()
    return dict(row) if row else None


def get(conn: Connection, user_id: int) -> dict[str, Any] | None:
    row = (
        conn.execute(select(console_users).where(console_users.c.id == user_id)).mappings().first()
    )
    return dict(row) if row else None


def list_all(conn: Connection) -> list[dict[str, Any]]:
    query = select(
        console_users.c.id,
        console_users.c.name,
        console_users.c.role,
        console_users.c.created_at,
        console_users.c.disabled_at,
    ).order_by(console_users.c.name)
    return [dict(r) for r in conn.execute(query).mappings()]


def update_user(conn: Connection, user_id: int, now: datetime, **values: Any) -> bool:
    """Change ``role``, ``password_hash`` or ``disabled_at``; False when there is no such user."""
    result = conn.execute(
        update(console_users).where(console_users.c.id == user_id).values(**values, updated_at=now)
    )
    return result.rowcount > 0
