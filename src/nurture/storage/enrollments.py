"""Enrollments, their steps and the tombstones of cancelled or moved bookings."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, and_, case, func, insert, select, update

from nurture.storage.dialect import insert_ignore
from nurture.storage.schema import enrollment_steps, enrollment_tombstones, enrollments

ACTIVE = "active"
ENDED = ("completed", "exited", "cancelled")
STEP_STATUSES = ("scheduled", "sent", "skipped", "cancelled")


# -- enrollments -----------------------------------------------------------------------------


def insert_live(conn: Connection, values: dict[str, Any]) -> int | None:
    """Insert an active enrollment; ``None`` when one is already live for (sequence, key).

    The partial unique index decides, so two concurrent signups cannot both enroll.
    """
    row = {**values, "status": ACTIVE}
    result = conn.execute(
        insert_ignore(conn, enrollments).values(**row).returning(enrollments.c.id)
    ).first()
    return int(result.id) if result is not None else None


def get(conn: Connection, enrollment_id: int, *, lock: bool = False) -> dict[str, Any] | None:
    stmt = select(enrollments).where(enrollments.c.id == enrollment_id)
    if lock and conn.dialect.name == "postgresql":
        stmt = stmt.with_for_update()
    row = conn.execute(stmt).mappings().first()
    return dict(row) if row is not None else None


def live(conn: Connection, sequence_id: str, key: str) -> dict[str, Any] | None:
    stmt = select(enrollments).where(
        enrollments.c.sequence_id == sequence_id,
        enrollments.c.key == key,
        enrollments.c.status == ACTIVE,
    )
    if conn.dialect.name == "postgresql":
        stmt = stmt.with_for_update()
    row = conn.execute(stmt).mappings().first()
    return dict(row) if row is not None else None


def latest(conn: Connection, sequence_id: str, key: str) -> dict[str, Any] | None:
    row = (
        conn.execute(
            select(enrollments)
            .where(enrollments.c.sequence_id == sequence_id, enrollments.c.key == key)
            .order_by(enrollments.c.id.desc())
            .limit(1)
        )
        .mappings()
        .first()
    )
    return dict(row) if row is not None else None


def live_for_contact(
    conn: Connection, contact_id: int, sequence_ids: Sequence[str] | None = None
) -> list[dict[str, Any]]:
    stmt = select(enrollments).where(
        enrollments.c.contact_id == contact_id, enrollments.c.status == ACTIVE
    )
    if sequence_ids is not None:
        stmt = stmt.where(enrollments.c.sequence_id.in_(list(sequence_ids)))
    return [dict(r) for r in conn.execute(stmt.order_by(enrollments.c.id)).mappings()]


def end(conn: Connection, enrollment_id: int, status: str, reason: str, now: datetime) -> bool:
    """Move a live enrollment to ``status``; False if it had already ended (compare-and-set)."""
    if status not in ENDED:
        raise ValueError(f"not an end status: {status}")
    result = conn.execute(
        update(enrollments)
        .where(enrollments.c.id == enrollment_id, enrollments.c.status == ACTIVE)
        .values(status=status, ended_at=now, end_reason=reason[:300])
    )
    return bool(result.rowcount)


def reanchor(
    conn: Connection, enrollment_id: int, key: str, anchor_at: datetime, event_id: int | None
) -> None:
    conn.execute(
        update(enrollments)
        .where(enrollments.c.id == enrollment_id)
        .values(
            key=key,
            anchor_at=anchor_at,
            event_id=event_id,
            reschedules=enrollments.c.reschedules + 1,
        )
    )


def search(
    conn: Connection,
    sequence_id: str,
    *,
    status: str | None = None,
    contact_id: int | None = None,
    before_id: int | None = None,
    limit: int = 50,
) -> list[dict[str, Any]]:
    stmt = select(enrollments).where(enrollments.c.sequence_id == sequence_id)
    if status is not None:
        stmt = stmt.where(enrollments.c.status == status)
    if contact_id is not None:
        stmt = stmt.where(enrollments.c.contact_id == contact_id)
    if before_id is not None:
        stmt = stmt.where(enrollments.c.id < before_id)
    stmt = stmt.order_by(enrollments.c.id.desc()).limit(limit)
    return [dict(r) for r in conn.execute(stmt).mappings()]


def for_contact(conn: Connection, contact_id: int) -> list[dict[str, Any]]:
    stmt = (
        select(enrollments).where(enrollments.c.contact_id == contact_id).order_by(enrollments.c.id)
    )
    return [dict(r) for r in conn.execute(stmt).mappings()]


def status_counts(conn: Connection) -> dict[str, dict[str, int]]:
    """``{sequence_id: {status: n}}``."""
    out: dict[str, dict[str, int]] = {}
    rows = conn.execute(
        select(enrollments.c.sequence_id, enrollments.c.status, func.count()).group_by(
            enrollments.c.sequence_id, enrollments.c.status
        )
    )
    for sequence_id, status, n in rows:
        out.setdefault(sequence_id, {})[status] = int(n)
    return out


def end_reasons(conn: Connection, sequence_id: str) -> dict[str, dict[str, int]]:
    """``{status: {reason: n}}`` for ended enrollments of a sequence."""
    out: dict[str, dict[str, int]] = {}
    rows = conn.execute(
        select(enrollments.c.status, enrollments.c.end_reason, func.count())
        .where(enrollments.c.sequence_id == sequence_id, enrollments.c.status != ACTIVE)
        .group_by(enrollments.c.status, enrollments.c.end_reason)
    )
    for status, reason, n in rows:
        out.setdefault(status, {})[reason or ""] = int(n)
    return out


# -- steps -----------------------------------------------------------------------------------


def insert_steps(conn: Connection, rows: Sequence[dict[str, Any]]) -> None:
    if rows:
        conn.execute(insert(enrollment_steps), list(rows))


def steps(conn: Connection, enrollment_ids: Sequence[int]) -> dict[int, list[dict[str, Any]]]:
    out: dict[int, list[dict[str, Any]]] = {i: [] for i in enrollment_ids}
    if not enrollment_ids:
        return out
    rows = conn.execute(
        select(enrollment_steps)
        .where(enrollment_steps.c.enrollment_id.in_(list(enrollment_ids)))
        .order_by(enrollment_steps.c.enrollment_id, enrollment_steps.c.position)
    ).mappings()
    for r in rows:
        out[r["enrollment_id"]].append(dict(r))
    return out


def get_step(conn: Connection, enrollment_id: int, step_id: str) -> dict[str, Any] | None:
    row = (
        conn.execute(
            select(enrollment_steps).where(
                enrollment_steps.c.enrollment_id == enrollment_id,
                enrollment_steps.c.step_id == step_id,
            )
        )
        .mappings()
        .first()
    )
    return dict(row) if row is not None else None


def update_step(
    conn: Connection,
    enrollment_id: int,
    step_id: str,
    values: dict[str, Any],
    *,
    only_if: str | None = "scheduled",
) -> bool:
    """Change one step; by default only while it is still ``scheduled`` (compare-and-set)."""
    conds = [
        enrollment_steps.c.enrollment_id == enrollment_id,
        enrollment_steps.c.step_id == step_id,
    ]
    if only_if is not None:
        conds.append(enrollment_steps.c.status == only_if)
    result = conn.execute(update(enrollment_steps).where(and_(*conds)).values(**values))
    return bool(result.rowcount)


def cancel_steps(conn: Connection, enrollment_id: int, reason: str, now: datetime) -> int:
    result = conn.execute(
        update(enrollment_steps)
        .where(
            enrollment_steps.c.enrollment_id == enrollment_id,
            enrollment_steps.c.status == "scheduled",
        )
        .values(status="cancelled", reason=reason, updated_at=now)
    )
    return int(result.rowcount)


def scheduled_left(conn: Connection, enrollment_id: int) -> int:
    return int(
        conn.execute(
            select(func.count()).where(
                enrollment_steps.c.enrollment_id == enrollment_id,
                enrollment_steps.c.status == "scheduled",
            )
        ).scalar_one()
    )


def funnel(conn: Connection, sequence_id: str) -> dict[str, dict[str, int]]:
    """``{step_id: {status: n}}`` over every enrollment of a sequence."""
    out: dict[str, dict[str, int]] = {}
    rows = conn.execute(
        select(enrollment_steps.c.step_id, enrollment_steps.c.status, func.count())
        .join(enrollments, enrollments.c.id == enrollment_steps.c.enrollment_id)
        .where(enrollments.c.sequence_id == sequence_id)
        .group_by(enrollment_steps.c.step_id, enrollment_steps.c.status)
    )
    for step_id, status, n in rows:
        out.setdefault(step_id, {})[status] = int(n)
    return out


def sent_counts(conn: Connection, sequence_id: str) -> int:
    """Enrollments of a sequence that got at least one step sent."""
    reached = case((enrollment_steps.c.status == "sent", 1), else_=0)
    sub = (
        select(enrollment_steps.c.enrollment_id, func.max(reached).label("any_sent"))
        .join(enrollments, enrollments.c.id == enrollment_steps.c.enrollment_id)
        .where(enrollments.c.sequence_id == sequence_id)
        .group_by(enrollment_steps.c.enrollment_id)
        .subquery()
    )
    return int(conn.execute(select(func.count()).where(sub.c.any_sent == 1)).scalar_one())


# -- tombstones ------------------------------------------------------------------------------


def add_tombstone(
    conn: Connection,
    sequence_id: str,
    key: str,
    reason: str,
    event_id: int | None,
    now: datetime,
) -> None:
    conn.execute(
        insert_ignore(conn, enrollment_tombstones).values(
            sequence_id=sequence_id, key=key, reason=reason, event_id=event_id, created_at=now
        )
    )


def tombstone(conn: Connection, sequence_id: str, key: str) -> dict[str, Any] | None:
    row = (
        conn.execute(
            select(enrollment_tombstones).where(
                enrollment_tombstones.c.sequence_id == sequence_id,
                enrollment_tombstones.c.key == key,
            )
        )
        .mappings()
        .first()
    )
    return dict(row) if row is not None else None
