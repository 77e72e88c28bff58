"""The ``task`` job handler: a rule's follow-up or call becomes a row in ``tasks``, announced to
the outbound endpoints subscribed to ``task.created``.

The job key is the task key, so a job that runs twice (lease lost, retry) stores one task. The
announcements are ``webhook`` jobs enqueued in the same transaction as the task row, only when
the row is new, and keyed by endpoint and task: a retry never announces twice, and a crash
never leaves a task stored but unannounced.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

from sqlalchemy import Connection

from nurture.database.engine import Database
from nurture.errors import ProviderError
from nurture.jobs import HandlerRegistry, JobContext, enqueue
from nurture.storage import contacts as contact_store
from nurture.storage import tasks as task_store

TASK_CREATED = "task.created"
# Endpoint names subscribed to an announcement type (``outbound.Outbound.subscribers``).
Subscribers = Callable[[str], Sequence[str]]


def task_row(ctx: JobContext) -> dict[str, Any]:
    payload = ctx.payload
    title = payload.get("title")
    if not isinstance(title, str) or not title:
        raise ProviderError("task job without a title", permanent=True)
    kind = payload.get("kind") or "task"
    if kind not in ("task", "call"):
        raise ProviderError(f"task job with unknown kind {kind!r}", permanent=True)
    return {
        "key": ctx.key,
        "contact_id": payload.get("contact_id", ctx.contact_id),
        "event_id": payload.get("event_id"),
        "rule_id": payload.get("rule_id"),
        "title": title,
        "kind": kind,
        "priority": payload.get("priority"),
        "status": "open",
        "due_at": ctx.now,
        "created_at": ctx.now,
    }


def task_view(row: dict[str, Any]) -> dict[str, Any]:
    """The task as announced (the ``task`` variable of an endpoint's payload template)."""
    return {
        "key": row["key"],
        "title": row["title"],
        "kind": row["kind"],
        "priority": row["priority"],
        "status": row["status"],
        "due_at": row["due_at"].isoformat(),
        "contact_id": row["contact_id"],
        "rule_id": row["rule_id"],
        "event_id": row["event_id"],
    }


def announcement_key(endpoint: str, task_key: str) -> str:
    return f"announce:{endpoint}:{task_key}"


def announce(conn: Connection, row: dict[str, Any], endpoints: Sequence[str]) -> None:
    for name in endpoints:
        enqueue(
            conn,
            kind="webhook",
            key=announcement_key(name, row["key"]),
            run_at=row["created_at"],
            contact_id=row["contact_id"],
            payload={
                "endpoint": name,
                "type": TASK_CREATED,
                "contact_id": row["contact_id"],
                "event_id": row["event_id"],
                "rule_id": row["rule_id"],
                "body": None,
                "vars": {"task": task_view(row)},
            },
        )


def store_task(db: Database, ctx: JobContext, subscribers: Subscribers | None = None) -> None:
    row = task_row(ctx)
    with db.begin() as conn:
        contact_id = row["contact_id"]
        if contact_id is not None and contact_store.get_row(conn, contact_id) is None:
            # Erased since the rule fired: a task about nobody is noise.
            return
        if task_store.create(conn, row) and subscribers is not None:
            announce(conn, row, subscribers(TASK_CREATED))


def register(
    registry: HandlerRegistry, db: Database, subscribers: Subscribers | None = None
) -> None:
    registry.register("task", partial(store_task, db, subscribers=subscribers))
