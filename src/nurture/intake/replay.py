"""Replaying a stored event: process it again from its canonical form (admin API, console)."""

from __future__ import annotations

from datetime import datetime

from nurture.database.engine import Database
from nurture.errors import NotFound
from nurture.storage import audit
from nurture.storage import events as event_store


def replay_event(
    db: Database,
    event_id: int,
    now: datetime,
    *,
    actor: str | None = None,
    client_addr: str | None = None,
) -> None:
    """Back to ``pending`` with fresh attempts; with ``actor``, audited in the same transaction."""
    with db.begin() as conn:
        before = event_store.get(conn, event_id)
        if before is None or not event_store.requeue(conn, event_id, now):
            raise NotFound(f"no event {event_id}")
        if actor is not None:
            audit.record(
                conn,
                at=now,
                actor=actor,
                action="event.replay",
                target_kind="event",
                target_id=str(event_id),
                detail={
                    "type": before["type"],
                    "source": before["source"],
                    "was": before["status"],
                    "error": (before["error"] or "")[:500],
                },
                client_addr=client_addr,
            )
