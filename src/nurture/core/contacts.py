"""The contact as the processor mutates it while handling one event."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

# Status only moves "down" this order by events; lifting a suppression needs an explicit
# re-subscribe through the API. A late ``delivered`` therefore never undoes a bounce.
STATUS_RANK = {"subscribed": 0, "unsubscribed": 1, "complained": 2, "bounced": 3}
# The status a new contact starts with when its address is already suppressed (imported or
# re-created after an unsubscribe or an erasure): the suppression reason, in status terms.
STATUS_FOR_SUPPRESSION = {
    "bounced": "bounced",
    "complained": "complained",
    "unsubscribed": "unsubscribed",
    "erased": "unsubscribed",
    "manual": "unsubscribed",
}
PROFILE_FIELDS = ("first_name", "last_name", "phone", "time_zone")


@dataclass(slots=True)
class ContactState:
    id: int
    email: str | None
    first_name: str | None = None
    last_name: str | None = None
    phone: str | None = None
    time_zone: str | None = None
    attributes: dict[str, Any] = field(default_factory=dict)
    tags: list[str] = field(default_factory=list)
    segments: dict[str, str] = field(default_factory=dict)
    status: str = "subscribed"
    score: int = 50
    engagement: dict[str, Any] = field(default_factory=dict)
    rfm: dict[str, Any] | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None
    last_event_at: datetime | None = None
    identities: dict[str, str] = field(default_factory=dict)
    is_new: bool = False
    dirty: bool = False

    def snapshot(self) -> ContactState:
        return copy.deepcopy(self)

    def apply_traits(self, traits: dict[str, Any]) -> list[str]:
        """Fill profile fields and attributes from an event; return the names that changed."""
        changed = []
        for name, value in traits.items():
            if value is None or value == "":
                continue
            if name in PROFILE_FIELDS:
                if getattr(self, name) != value:
                    setattr(self, name, str(value))
                    changed.append(name)
            elif self.attributes.get(name) != value:
                self.attributes[name] = value
                changed.append(name)
        if changed:
            self.dirty = True
        return changed

    def add_tag(self, tag: str) -> bool:
        if tag in self.tags:
            return False
        self.tags.append(tag)
        self.dirty = True
        return True

    def remove_tag(self, tag: str) -> bool:
        if tag not in self.tags:
            return False
        self.tags.remove(tag)
        self.dirty = True
        return True

    def degrade_status(self, status: str) -> bool:
        """Move to a more restrictive status; never back up (monotonic)."""
        if STATUS_RANK[status] <= STATUS_RANK.get(self.status, 0):
            return False
        self.status = status
        self.dirty = True
        return True

    def carry_suppressions(self, reasons: set[str]) -> bool:
        """A contact created for an address suppressed earlier starts suppressed."""
        changed = False
        for reason in reasons:
            status = STATUS_FOR_SUPPRESSION.get(reason)
            if status is not None:
                changed = self.degrade_status(status) or changed
        return changed

    @property
    def suppressed(self) -> bool:
        return self.status != "subscribed"

    def view(self) -> dict[str, Any]:
        """The contact as rules, segments and templates see it."""
        return {
            "id": self.id,
            "email": self.email,
            "first_name": self.first_name,
            "last_name": self.last_name,
            "phone": self.phone,
            "time_zone": self.time_zone,
            "attributes": self.attributes,
            "tags": list(self.tags),
            "segments": dict(self.segments),
            "status": self.status,
            "score": self.score,
            "rfm": self.rfm or {},
            "identities": dict(self.identities),
        }
