"""Response and request models of the admin API (they are what OpenAPI shows)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field


class ContactOut(BaseModel):
    id: int
    email: str | None
    first_name: str | None = None
    last_name: str | None = None
    phone: str | None = None
    time_zone: str | None = None
    status: str
    tags: list[str] = Field(default_factory=list)
    segments: dict[str, str] = Field(default_factory=dict)
    attributes: dict[str, Any] = Field(default_factory=dict)
    score: int
    rfm: dict[str, Any] | None = None
    identities: dict[str, str] = Field(default_factory=dict)
    created_at: datetime
    updated_at: datetime
    last_event_at: datetime | None = None


class ContactPage(BaseModel):
    items: list[ContactOut]
    next_after: int | None = None


class TimelineEntry(BaseModel):
    id: int
    at: datetime
    kind: str
    event_id: int | None = None
    rule_id: str | None = None
    detail: dict[str, Any]


class TimelineOut(BaseModel):
    contact_id: int
    items: list[TimelineEntry]
    next_before: int | None = None


class EventSummary(BaseModel):
    id: int
    source: str
    type: str
    status: str
    attempts: int
    partition: int
    contact_id: int | None = None
    received_at: datetime
    occurred_at: datetime
    processed_at: datetime | None = None
    error: str | None = None
    depth: int = 0
    parent_id: int | None = None


class EventPage(BaseModel):
    items: list[EventSummary]
    next_before: int | None = None


class EventDetail(EventSummary):
    dedupe_key: str
    content_type: str | None = None
    canonical: dict[str, Any]
    raw: str | None = Field(None, description="The body as received (UTF-8; base64 if binary)")
    raw_encoding: str | None = None


class Accepted(BaseModel):
    status: str
    event_ids: list[int] = Field(default_factory=list)


class Erased(BaseModel):
    """What an erasure removed (``contacts.erasure.ErasureReport``)."""

    contact_id: int
    erased_at: datetime
    email_hash: str | None = None
    events_redacted: int
    events_closed: int
    messages_redacted: int
    jobs_cancelled: int
    jobs_blanked: int
    suppressions_kept: int
    deleted: dict[str, int]
    audit_id: int
