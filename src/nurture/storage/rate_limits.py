"""Token buckets in a row, so every worker on one database shares a provider's limit."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Connection, select, update

from nurture.schema.tables import rate_limits
from nurture.storage.dialect import insert_ignore


def take(conn: Connection, name: str, rate: float, burst: int, now: datetime) -> float:
    """Take one token; return 0 when taken, else the seconds until one is available.

    The row is locked (``FOR UPDATE`` on PostgreSQL; SQLite writers are serialised anyway), so
    concurrent workers never both spend the last token.
    """
    taken, wait = take_up_to(conn, name, rate, burst, now, 1)
    return 0.0 if taken else wait


def take_up_to(
    conn: Connection, name: str, rate: float, burst: int, now: datetime, wanted: int
) -> tuple[int, float]:
    """Take up to ``wanted`` whole tokens at once (a batch of sends): ``(taken, wait)``, where
    ``wait`` is the seconds until the next token when fewer than ``wanted`` were available."""
    conn.execute(
        insert_ignore(conn, rate_limits).values(
            name=name, tokens_milli=burst * 1000, updated_at=now
        )
    )
    row = conn.execute(
        select(rate_limits.c.tokens_milli, rate_limits.c.updated_at)
        .where(rate_limits.c.name == name)
        .with_for_update()
    ).one()
    elapsed = max(0.0, (now - row.updated_at).total_seconds())
    tokens = min(float(burst), row.tokens_milli / 1000 + elapsed * rate)
    taken = max(0, min(wanted, int(tokens)))
    tokens -= taken
    wait = 0.0 if taken >= wanted else (1 - tokens) / rate
    conn.execute(
        update(rate_limits)
        .where(rate_limits.c.name == name)
        .values(tokens_milli=int(tokens * 1000), updated_at=max(now, row.updated_at))
    )
    return taken, wait


def hold(
    conn: Connection, name: str, rate: float, burst: int, seconds: float, now: datetime
) -> None:
    """Empty the bucket so that its next token is ``seconds`` away (a provider's ``Retry-After``).

    The tokens go below zero: ``take`` refills them at ``rate`` as usual, so every worker waits
    out the same pause. A bucket already emptier than that is left as it is.
    """
    conn.execute(
        insert_ignore(conn, rate_limits).values(
            name=name, tokens_milli=burst * 1000, updated_at=now
        )
    )
    row = conn.execute(
        select(rate_limits.c.tokens_milli, rate_limits.c.updated_at)
        .where(rate_limits.c.name == name)
        .with_for_update()
    ).one()
    elapsed = max(0.0, (now - row.updated_at).total_seconds())
    tokens = min(float(burst), row.tokens_milli / 1000 + elapsed * rate)
    # Bounded so the column (32-bit milli-tokens) never overflows, whatever a header says.
    target = max(1.0 - seconds * rate, -1_000_000.0)
    if tokens <= target:
        return
    conn.execute(
        update(rate_limits)
        .where(rate_limits.c.name == name)
        .values(tokens_milli=int(target * 1000), updated_at=max(now, row.updated_at))
    )
