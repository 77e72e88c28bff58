"""What a processing step sees and may change while one event is handled."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

from sqlalchemy import Connection

from nurture.core.contacts import ContactState
from nurture.core.events import StoredEvent

if TYPE_CHECKING:
    from nurture.intake.deferred import DeferredWrites


@dataclass(slots=True)
class DerivedEvent:
    type: str
    data: dict[str, Any]


@dataclass
class ProcessingContext:
    """One event's unit of work. ``conn`` is inside the batch transaction and the event's savepoint:
    whatever a step writes commits with the event being marked processed, or not at all."""

    conn: Connection
    event: StoredEvent
    contact: ContactState | None
    now: datetime
    timeline: list[dict[str, Any]] = field(default_factory=list)
    derived: list[DerivedEvent] = field(default_factory=list)
    results: dict[str, Any] = field(default_factory=dict)
    # Rows the batch writes at its end (derived events, sequence steps and their jobs);
    # ``None`` writes them at once. See ``nurture.intake.deferred``.
    later: DeferredWrites | None = None

    def settle(self) -> None:
        """Write the batch's deferred rows now: call before reading or changing such rows."""
        if self.later is not None:
            self.later.flush(self.conn, self.now)

    def note(
        self, kind: str, detail: dict[str, Any], rule_id: str | None = None
    ) -> dict[str, Any] | None:
        """Record a change on the contact's timeline, tied to this event; returns the row, which
        is written with the batch (an enrollment refused at the batch's insert corrects its own)."""
        if self.contact is None:
            return None
        row = {
            "contact_id": self.contact.id,
            "event_id": self.event.id,
            "at": self.now,
            "kind": kind,
            "rule_id": rule_id,
            "detail": detail,
        }
        self.timeline.append(row)
        return row

    def derive(self, type_: str, data: dict[str, Any]) -> None:
        """Queue a derived event (``score.crossed`` ...), processed after this one."""
        self.derived.append(DerivedEvent(type_, data))


class Step(Protocol):
    """A processing step. Steps run in order for every event; a raise fails the event (retried).

    A step may run more than once for one event (a batch is redone when another event in it
    fails), so every effect must go through ``ctx.conn`` or a job: nothing outside the transaction.
    """

    name: str

    def apply(self, ctx: ProcessingContext) -> None: ...
