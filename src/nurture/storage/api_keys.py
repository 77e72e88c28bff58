"""Admin API keys, stored as SHA-256 hashes (256-bit random keys need no slow hash)."""

from __future__ import annotations

import hashlib
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, insert, select, update

from nurture.schema.tables import api_keys


def digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def create(conn: Connection, name: str, key: str, now: datetime) -> int:
    return int(
        conn.execute(
            insert(api_keys)
            .values(name=name, prefix=key[:12], key_hash=digest(key), created_at=now)
            .returning(api_keys.c.id)
        ).scalar_one()
    )


def find_active(conn: Connection, key: str) -> dict[str, Any] | None:
    row = (
        conn.execute(
            select(api_keys.c.id, api_keys.c.name).where(
                api_keys.c.key_hash == digest(key), api_keys.c.revoked_at.is_(None)
            )
        )
        .mappings()
        .first()
    )
    return dict(row) if row else None


def touch(conn: Connection, key_id: int, now: datetime) -> None:
    conn.execute(update(api_keys).where(api_keys.c.id == key_id).values(last_used_at=now))


def list_all(conn: Connection) -> list[dict[str, Any]]:
    cols = (api_keys.c.id, api_keys.c.name, api_keys.c.prefix, api_keys.c.created_at)
    return [dict(r) for r in conn.execute(select(*cols).order_by(api_keys.c.id)).mappings()]


def revoke(conn: Connection, key_id: int, now: datetime) -> bool:
    result = conn.execute(update(api_keys).where(api_keys.c.id == key_id).values(revoked_at=now))
    return result.rowcount == 1
