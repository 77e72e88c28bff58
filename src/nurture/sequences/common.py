"""What the sequence modules share: the job kind and key of a step, what ``enroll`` returns,
and reading a key, an anchor and a time zone."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from nurture import jobs
from nurture.clock import ensure_utc
from nurture.core.contacts import ContactState
from nurture.rules.expr import Expr, ExprError, Scope
from nurture.sequences.plan import PlannedStep

KIND = "sequence_step"


def step_key(enrollment_id: int, step_id: str) -> str:
    return f"seq:{enrollment_id}:{step_id}"


@dataclass
class Enrolment:
    """What ``enroll`` did: ``enrolled``, ``duplicate``, ``tombstoned`` or ``not_reentering``."""

    status: str
    enrollment_id: int | None
    planned: list[PlannedStep] = field(default_factory=list)

    @property
    def created(self) -> bool:
        return self.status == "enrolled"


def zone(name: str | None) -> ZoneInfo | None:
    if not name:
        return None
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return None


def parse_anchor(value: Any) -> datetime:
    """An anchor from CEL: an ISO 8601 string with an offset, or a timestamp."""
    if isinstance(value, datetime):
        return ensure_utc(value)
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value.strip())
        except ValueError:
            raise ExprError(f"anchor {value!r} is not an ISO 8601 date-time") from None
        if parsed.tzinfo is None:
            raise ExprError(f"anchor {value!r} has no offset (naive times are refused)")
        return ensure_utc(parsed)
    raise ExprError(f"anchor must be a date-time, not {type(value).__name__}")


def key_for(expr: Expr | None, scope: Scope, contact: ContactState | None) -> str:
    """The enrollment key: ``contact:{id}`` (``key: contact``) or the key expression's value."""
    if expr is None:
        if contact is None:
            raise ExprError("key: contact needs a contact")
        return f"contact:{contact.id}"
    value = expr.evaluate(scope)
    if value is None or value == "":
        raise ExprError(f"key {expr.source!r} is empty")
    return str(value)[:300]


def describe(p: PlannedStep) -> dict[str, Any]:
    out: dict[str, Any] = {"step": p.id, "due_at": p.due_at.isoformat()}
    if p.skip is not None:
        out["skipped"] = p.skip
    return out


def step_job(enrollment_id: int, contact_id: int, step_id: str, run_at: datetime) -> jobs.JobSpec:
    return jobs.JobSpec(
        kind=KIND,
        key=step_key(enrollment_id, step_id),
        run_at=run_at,
        payload=step_payload(enrollment_id, contact_id, step_id),
        contact_id=contact_id,
        enrollment_id=enrollment_id,
    )


def step_payload(enrollment_id: int, contact_id: int, step_id: str) -> dict[str, Any]:
    return {"enrollment_id": enrollment_id, "step_id": step_id, "contact_id": contact_id}
