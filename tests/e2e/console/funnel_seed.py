"""A known set of enrollments, steps and messages of the Christmas sequence, and the funnel
they make (shared by the in-process and the browser tests)."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import insert

from nurture.database.engine import Database
from nurture.schema.tables import enrollment_steps, enrollments, messages
from nurture.storage import contacts as contact_store

SEQUENCE = "christmas-2025"
STEPS = [f"email-{i}" for i in range(1, 8)]
# (segment, status, end reason, steps sent, message marks per sent step)
PEOPLE: list[tuple[str | None, str, str | None, int, list[set[str]]]] = [
    ("CRITICAL", "active", None, 2, [{"opened", "clicked"}, {"opened"}]),
    ("CRITICAL", "exited", "event booking.created", 1, [{"opened"}]),
    ("CRITICAL", "exited", "event email.unsubscribed", 1, [set()]),
    ("URGENT", "active", None, 1, [set()]),
    ("URGENT", "exited", "event purchase.completed", 2, [set(), {"opened", "clicked"}]),
    (None, "active", None, 0, []),
]
# stage -> (all, CRITICAL, URGENT, no segment)
EXPECTED = {
    "enrolled": (6, 3, 2, 1),
    "email-1 sent": (5, 3, 2, 0),
    "email-2 sent": (2, 1, 1, 0),
    "email-3 sent": (0, 0, 0, 0),
    "opened": (3, 2, 1, 0),
    "clicked": (2, 1, 1, 0),
    "booked / purchased": (2, 1, 1, 0),
    "exited": (1, 1, 0, 0),
}


def seed_funnel(db: Database, now: datetime) -> list[int]:
    """The people above as contacts enrolled in the Christmas sequence; their contact ids."""
    run = uuid.uuid4().hex[:8]
    ids = []
    with db.begin() as conn:
        for n, (segment, status, reason, sent, marks) in enumerate(PEOPLE):
            contact = contact_store.create(conn, f"funnel-{run}-{n}@example.com", now)
            if segment is not None:
                contact.segments = {"assessment": segment}
                contact_store.save(conn, contact, now)
            ids.append(contact.id)
            ended = None if status == "active" else now
            eid = conn.execute(
                insert(enrollments)
                .values(
                    sequence_id=SEQUENCE,
                    key=f"contact:{contact.id}",
                    contact_id=contact.id,
                    status=status,
                    anchor_at=now,
                    enrolled_at=now,
                    ended_at=ended,
                    end_reason=reason,
                )
                .returning(enrollments.c.id)
            ).scalar_one()
            for position, step in enumerate(STEPS):
                done = position < sent
                step_status = (
                    "sent" if done else ("scheduled" if status == "active" else "cancelled")
                )
                conn.execute(
                    insert(enrollment_steps).values(
                        enrollment_id=eid,
                        step_id=step,
                        position=position,
                        status=step_status,
                        due_at=now + timedelta(days=position),
                        sent_at=now if done else None,
                        updated_at=now,
                    )
                )
                if done:
                    mark: dict[str, Any] = {f"{m}_at": now for m in marks[position]}
                    conn.execute(
                        insert(messages).values(
                            key=f"seq:{eid}:{step}",
                            channel="email",
                            provider="console",
                            status="sent",
                            contact_id=contact.id,
                            template=f"christmas_{step}",
                            transactional=False,
                            enrollment_id=eid,
                            step_id=step,
                            created_at=now,
                            updated_at=now,
                            sent_at=now,
                            **mark,
                        )
                    )
    return ids
