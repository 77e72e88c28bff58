"""Console sessions, keyed by the SHA-256 of the cookie's token."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Connection, delete, insert, select, update

from nurture.schema.tables import console_sessions, console_users


def create(
    conn: Connection,
    *,
    token_hash: str,
    user_id: int,
    csrf_token: str,
    now: datetime,
    expires_at: datetime,
    client_addr: str | None,
) -> None:
    conn.execute(
        insert(console_sessions).values(
            token_hash=token_hash,
            user_id=user_id,
            csrf_token=csrf_token,
            created_at=now,
            last_seen_at=now,
            expires_at=expires_at,
            client_addr=client_addr,
        )
    )


def find(conn: Connection, token_hash: str) -> dict[str, Any] | None:
    """The session with its user's name, role and disabled mark, in one indexed read."""
    query = (
        select(
            console_sessions,
            console_users.c.name,
            console_users.c.role,
            console_users.c.disabled_at,
        )
        .join(console_users, console_users.c.id == console_sessions.c.user_id)
        .where(console_sessions.c.token_hash == token_hash)
    )
    row = conn.execute(query).mappings().first()
    return dict(row) if row else None


def touch(conn: Connection, token_hash: str, now: datetime) -> None:
    conn.execute(
        update(console_sessions)
        .where(console_sessions.c.token_hash == token_hash)
        .values(last_seen_at=now)
    )


def end(conn: Connection, token_hash: str) -> None:
    conn.execute(delete(console_sessions).where(console_sessions.c.token_hash == token_hash))


def end_for_user(conn: Connection, user_id: int) -> int:
    result = conn.execute(delete(console_sessions).where(console_sessions.c.user_id == user_id))
    return int(result.rowcount)


def prune(conn: Connection, now: datetime) -> int:
    result = conn.execute(delete(console_sessions).where(console_sessions.c.expires_at <= now))
    return int(result.rowcount)
