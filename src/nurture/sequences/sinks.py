"""Where a sequence's timeline notes and derived events go.

While an event is processed they go to its ``ProcessingContext`` (they commit with the event);
elsewhere (the API, the step runner) ``DirectSink`` writes them on the caller's connection.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from datetime import datetime
from typing import Any

from sqlalchemy import Connection

from nurture.core.contacts import ContactState
from nurture.core.events import ContactRef, content_hash, partition_for
from nurture.intake.context import ProcessingContext
from nurture.intake.deferred import DeferredWrites
from nurture.storage import events as event_store
from nurture.storage import timeline as timeline_store


class Sink(ABC):
    """Timeline notes and derived events. While an event is processed they go to its context;
    elsewhere (API, job handler) ``DirectSink`` writes them itself."""

    @abstractmethod
    def note(
        self, kind: str, detail: dict[str, Any], rule_id: str | None = None
    ) -> dict[str, Any] | None:
        """The timeline row, when it is written later (with the batch) and may still be changed."""

    @abstractmethod
    def emit(self, type_: str, data: dict[str, Any]) -> None: ...

    def plan(
        self,
        conn: Connection,
        steps: list[dict[str, Any]],
        jobs: list[dict[str, Any]],
        now: datetime,
    ) -> None:
        """A new enrollment's step rows and step jobs: written now, or with the batch."""
        writes = DeferredWrites()
        writes.plan(steps, jobs)
        writes.flush(conn, now)

    def settle(self) -> None:  # noqa: B027 (a hook: nothing is pending outside a batch)
        """Before enrollments, step rows or step jobs are read or changed: everything planned is
        written."""

    def reserve(self, conn: Connection, sequence_id: str, key: str, now: datetime) -> int | None:
        """An id for an enrollment inserted with the batch (``enrol``), or ``None``: insert it
        now. Outside a batch, always now."""
        return None

    def enrol(
        self,
        row: dict[str, Any],
        steps: list[dict[str, Any]],
        jobs: list[dict[str, Any]],
        refused: Callable[[Connection], None],
    ) -> None:
        """An enrollment with the id ``reserve`` gave, written with the batch; see
        ``nurture.intake.deferred``."""
        raise TypeError("no batch to enrol with: reserve() gave no id")


class ContextSink(Sink):
    def __init__(self, ctx: ProcessingContext) -> None:
        self.ctx = ctx

    def plan(
        self,
        conn: Connection,
        steps: list[dict[str, Any]],
        jobs: list[dict[str, Any]],
        now: datetime,
    ) -> None:
        if self.ctx.later is None:
            super().plan(conn, steps, jobs, now)
        else:
            self.ctx.later.plan(steps, jobs)

    def settle(self) -> None:
        self.ctx.settle()

    def reserve(self, conn: Connection, sequence_id: str, key: str, now: datetime) -> int | None:
        if self.ctx.later is None:
            return None
        return self.ctx.later.reserve(conn, sequence_id, key, now)

    def enrol(
        self,
        row: dict[str, Any],
        steps: list[dict[str, Any]],
        jobs: list[dict[str, Any]],
        refused: Callable[[Connection], None],
    ) -> None:
        if self.ctx.later is None:
            super().enrol(row, steps, jobs, refused)
        else:
            self.ctx.later.enrol(row, steps, jobs, refused)

    def note(
        self, kind: str, detail: dict[str, Any], rule_id: str | None = None
    ) -> dict[str, Any] | None:
        return self.ctx.note(kind, detail, rule_id)

    def emit(self, type_: str, data: dict[str, Any]) -> None:
        self.ctx.derive(type_, data)


class DirectSink(Sink):
    """Writes timeline rows and inserts derived events into the inbox on ``conn``."""

    def __init__(
        self, conn: Connection, contact: ContactState | None, now: datetime, partitions: int
    ) -> None:
        self.conn = conn
        self.contact = contact
        self.now = now
        self.partitions = partitions

    def note(
        self, kind: str, detail: dict[str, Any], rule_id: str | None = None
    ) -> dict[str, Any] | None:
        if self.contact is None:
            return None
        row = {
            "contact_id": self.contact.id,
            "event_id": None,
            "at": self.now,
            "kind": kind,
            "rule_id": rule_id,
            "detail": detail,
        }
        timeline_store.append(self.conn, [row])
        return None  # written already

    def emit(self, type_: str, data: dict[str, Any]) -> None:
        contact = self.contact
        ref = (
            ContactRef(email=contact.email, identities=dict(contact.identities))
            if contact
            else None
        )
        canonical = {
            "type": type_,
            "occurred_at": self.now.isoformat(),
            "contact": ref.to_json() if ref else None,
            "data": data,
        }
        key = ref.key if ref else None
        # One end per enrollment, so this key makes a redone transaction insert it once.
        dedupe = "derived:" + content_hash("sequence", type_, data.get("enrollment_id"))
        event_store.insert_new(
            self.conn,
            [
                {
                    "source": "derived",
                    "type": type_,
                    "dedupe_key": dedupe,
                    "partition": partition_for(key, self.partitions),
                    "status": "pending",
                    "available_at": self.now,
                    "contact_key": key,
                    "contact_id": contact.id if contact else None,
                    "raw": None,
                    "content_type": None,
                    "canonical": canonical,
                    "received_at": self.now,
                    "occurred_at": self.now,
                    "depth": 1,
                    "parent_id": None,
                }
            ],
        )
