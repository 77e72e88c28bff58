"""Any Standard Webhooks sender, mapped onto canonical events by configuration.

``webhook-id`` is the dedupe key. The mapping names where the payload keeps the event type, the
contact and the data (dotted paths); types are renamed by ``types``, kept as they are with
``keep_types`` when they are valid canonical names, and otherwise stored as ``<source>.<type>``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from nurture.core.events import EVENT_TYPE, ContactRef, InboundEvent
from nurture.errors import FieldProblem, InvalidFields, NotConfigured
from nurture.providers.payloads import (
    email_of,
    from_epoch,
    from_iso,
    load_object,
    slug,
    text_of,
    vendor_type,
)
from nurture.providers.signing import STANDARD_HEADERS, verify_standard


class ContactPaths(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    email: str | None = None
    identities: dict[str, str] = Field(default_factory=dict)
    traits: dict[str, str] = Field(default_factory=dict)


class GenericMapping(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    type: str = "type"
    occurred_at: str | None = None
    # dotted path of the object stored as the event's data; empty = the whole payload
    data: str = ""
    contact: ContactPaths = Field(default_factory=ContactPaths)
    types: dict[str, str] = Field(default_factory=dict)
    keep_types: bool = False


def lookup(payload: Any, path: str) -> Any:
    value = payload
    for part in path.split(".") if path else []:
        if isinstance(value, dict):
            value = value.get(part)
        elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            return None
    return value


class GenericSource:
    name = "generic"

    def __init__(
        self,
        source_id: str,
        secrets: Sequence[str],
        mapping: GenericMapping,
        *,
        tolerance: int = 300,
        secret_env: str = "",
    ) -> None:
        self.source_id = source_id
        self.name = f"generic:{source_id}"
        self.secrets = list(secrets)
        self.mapping = mapping
        self.tolerance = tolerance
        self.secret_env = secret_env

    def verify(self, headers: Mapping[str, str], raw_body: bytes, now: datetime) -> None:
        if not self.secrets:
            raise NotConfigured(
                f"source {self.source_id!r} is not configured: set {self.secret_env}"
            )
        verify_standard(headers, raw_body, self.secrets, now, tolerance=self.tolerance)

    def event_type(self, raw_type: str) -> str:
        mapped = self.mapping.types.get(raw_type)
        if mapped is not None:
            return mapped
        if self.mapping.keep_types and EVENT_TYPE.match(raw_type):
            return raw_type
        return vendor_type(slug(self.source_id), raw_type)

    def parse(self, raw_body: bytes, headers: Mapping[str, str]) -> list[InboundEvent]:
        payload = load_object(raw_body)
        m = self.mapping
        raw_type = text_of(lookup(payload, m.type))
        if raw_type is None:
            raise InvalidFields([FieldProblem(m.type, "is required (the event type)")])
        data = lookup(payload, m.data)
        if not isinstance(data, dict):
            raise InvalidFields([FieldProblem(m.data or "body", "must be an object")])
        when = None
        if m.occurred_at:
            stamp = lookup(payload, m.occurred_at)
            when = from_iso(stamp) or (from_epoch(stamp) if not isinstance(stamp, str) else None)
        email = email_of(lookup(payload, m.contact.email)) if m.contact.email else None
        identities = {
            kind: str(value)
            for kind, path in m.contact.identities.items()
            if text_of(value := lookup(payload, path)) is not None
        }
        traits = {
            trait: value
            for trait, path in m.contact.traits.items()
            if (value := lookup(payload, path)) is not None
        }
        contact = ContactRef(email, identities, traits) if email or identities else None
        return [
            InboundEvent(
                source=self.name,
                type=self.event_type(raw_type),
                dedupe_key=headers.get(STANDARD_HEADERS[0], ""),
                contact=contact,
                data=data,
                occurred_at=when,
            )
        ]
