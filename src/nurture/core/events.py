"""The canonical event: what every source turns its payload into."""

from __future__ import annotations

import hashlib
import re
import zlib
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson

EVENT_TYPE = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z0-9_]+)+$")

# Events a browser may send with a publishable write key. Purchases and anything that moves
# money or consent must come server-to-server, signed.
BEHAVIOUR_TYPES = frozenset({"page.viewed", "link.clicked", "form.submitted"})


def is_behaviour_type(event_type: str) -> bool:
    return event_type in BEHAVIOUR_TYPES or event_type.startswith("custom.")


_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


def normalise_email(value: str) -> str | None:
    """Trimmed, lower-case; ``None`` when it does not look like an address."""
    email = value.strip().lower()
    return email if _EMAIL.match(email) else None


def email_hash(email: str | None) -> str | None:
    """SHA-256 of the normalised address: how suppressions outlive an erased contact."""
    if not email:
        return None
    normal = normalise_email(email) or email.strip().lower()
    return hashlib.sha256(normal.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class ContactRef:
    """How an event names its contact: an e-mail, other identities, and profile traits to upsert."""

    email: str | None = None
    identities: dict[str, str] = field(default_factory=dict)
    traits: dict[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> str | None:
        """The partitioning key: the e-mail if known, else the first identity."""
        if self.email:
            return "email:" + self.email
        for kind in sorted(self.identities):
            return f"{kind}:{self.identities[kind]}"
        return None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.email:
            out["email"] = self.email
        if self.identities:
            out["identities"] = dict(self.identities)
        if self.traits:
            out["traits"] = dict(self.traits)
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any] | None) -> ContactRef | None:
        if not data:
            return None
        return cls(
            email=data.get("email"),
            identities=dict(data.get("identities") or {}),
            traits=dict(data.get("traits") or {}),
        )


@dataclass(frozen=True, slots=True)
class InboundEvent:
    """A verified, parsed event, ready to be stored in the inbox."""

    source: str
    type: str
    dedupe_key: str
    contact: ContactRef | None
    data: dict[str, Any]
    occurred_at: datetime | None = None
    # The bytes this event came from when it is one of several in a delivery; ``None`` means
    # the whole request body.
    raw: bytes | None = None

    def canonical(self) -> dict[str, Any]:
        return {
            "type": self.type,
            "occurred_at": self.occurred_at.isoformat() if self.occurred_at else None,
            "contact": self.contact.to_json() if self.contact else None,
            "data": self.data,
        }


def partition_for(key: str | None, partitions: int) -> int:
    """Stable across processes and Python versions (``hash()`` is salted per process)."""
    if key is None:
        return 0
    return zlib.crc32(key.encode()) % partitions


def content_hash(*parts: Any) -> str:
    """A dedupe key for senders that give no event id: a hash of what identifies the event."""
    return hashlib.sha256(orjson.dumps(parts, option=orjson.OPT_SORT_KEYS)).hexdigest()


@dataclass(slots=True)
class StoredEvent:
    """An inbox row as the processor sees it."""

    id: int
    source: str
    type: str
    partition: int
    contact: ContactRef | None
    data: dict[str, Any]
    occurred_at: datetime
    received_at: datetime
    attempts: int = 0
    depth: int = 0
    parent_id: int | None = None
