"""The track source: canonical events, signed with Standard Webhooks or sent with a write key."""

from __future__ import annotations

import hmac
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import orjson

from nurture.core.events import (
    EVENT_TYPE,
    ContactRef,
    InboundEvent,
    content_hash,
    is_behaviour_type,
    normalise_email,
)
from nurture.errors import (
    FieldProblem,
    Forbidden,
    InvalidFields,
    MalformedPayload,
    NotConfigured,
    PayloadTooLarge,
    Unauthenticated,
)
from nurture.providers.signing import has_standard_headers, verify_standard

WRITE_KEY_HEADER = "x-nurture-write-key"
PROFILE_KEYS = ("first_name", "last_name", "phone", "time_zone")
IDENTITY_KEYS = ("external_id", "client_code")


def parse_time(value: Any, field: str, problems: list[FieldProblem]) -> datetime | None:
    if value is None:
        return None
    if not isinstance(value, str):
        problems.append(FieldProblem(field, "must be an ISO 8601 string"))
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        problems.append(FieldProblem(field, "is not an ISO 8601 date-time"))
        return None
    if parsed.tzinfo is None:
        problems.append(FieldProblem(field, "needs a UTC offset (e.g. 2026-01-01T10:00:00Z)"))
        return None
    return parsed


def parse_contact(value: Any, field: str, problems: list[FieldProblem]) -> ContactRef | None:
    if not isinstance(value, dict):
        problems.append(FieldProblem(field, "must be an object with email or external_id"))
        return None
    email = None
    if value.get("email") is not None:
        email = normalise_email(str(value["email"]))
        if email is None:
            problems.append(FieldProblem(f"{field}.email", "is not a valid e-mail address"))
            return None
    idents = {k: str(value[k]) for k in IDENTITY_KEYS if value.get(k) not in (None, "")}
    if email is None and not idents:
        problems.append(FieldProblem(field, "needs email or external_id"))
        return None
    traits: dict[str, Any] = {k: value[k] for k in PROFILE_KEYS if value.get(k) is not None}
    extra = value.get("traits")
    if isinstance(extra, dict):
        traits.update(extra)
    return ContactRef(email=email, identities=idents, traits=traits)


def parse_canonical(
    item: Any, prefix: str, source: str, problems: list[FieldProblem]
) -> InboundEvent | None:
    """One canonical event ``{id?, type, occurred_at?, contact, data}``; problems are collected."""
    if not isinstance(item, dict):
        problems.append(FieldProblem(prefix or "body", "must be an object"))
        return None
    start = len(problems)
    event_type = item.get("type")
    if not isinstance(event_type, str) or not EVENT_TYPE.match(event_type):
        problems.append(
            FieldProblem(f"{prefix}type", "must be a dotted lower-case name like page.viewed")
        )
    occurred = parse_time(item.get("occurred_at"), f"{prefix}occurred_at", problems)
    contact = parse_contact(item.get("contact"), f"{prefix}contact", problems)
    data = item.get("data", {})
    if data is None:
        data = {}
    if not isinstance(data, dict):
        problems.append(FieldProblem(f"{prefix}data", "must be an object"))
    event_id = item.get("id")
    if event_id is not None and (not isinstance(event_id, str | int) or len(str(event_id)) > 128):
        problems.append(FieldProblem(f"{prefix}id", "must be a string of at most 128 characters"))
    if len(problems) > start:
        return None
    assert isinstance(event_type, str) and contact is not None
    key = (
        f"id:{event_id}"
        if event_id is not None
        else content_hash(event_type, contact.to_json(), item.get("occurred_at"), data)
    )
    return InboundEvent(
        source=source,
        type=event_type,
        dedupe_key=key,
        contact=contact,
        data=data,
        occurred_at=occurred,
    )


def load_json(raw: bytes) -> Any:
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise MalformedPayload(f"body is not valid JSON: {exc}") from None


def items_of(payload: Any, max_events: int) -> tuple[list[Any], bool]:
    if isinstance(payload, list):
        if not payload:
            raise InvalidFields([FieldProblem("body", "empty array")])
        if len(payload) > max_events:
            raise PayloadTooLarge(f"at most {max_events} events per request, got {len(payload)}")
        return payload, True
    return [payload], False


class TrackSource:
    """Auth: a Standard Webhooks signature (server side) or a publishable write key (browser).

    A write key may only send behaviour events (page views, clicks, form submissions,
    ``custom.*``): anything that moves money or consent must be signed by a server.
    """

    name = "track"

    def __init__(
        self,
        secrets: Sequence[str],
        write_keys: Sequence[str],
        *,
        tolerance: int = 300,
        max_events: int = 500,
    ) -> None:
        self.secrets = list(secrets)
        self.write_keys = list(write_keys)
        self.tolerance = tolerance
        self.max_events = max_events

    @property
    def configured(self) -> bool:
        return bool(self.secrets or self.write_keys)

    def write_key_of(self, headers: Mapping[str, str], query: Mapping[str, str]) -> str | None:
        auth = headers.get("authorization", "")
        if auth.lower().startswith("bearer "):
            return auth[7:].strip()
        return headers.get(WRITE_KEY_HEADER) or query.get("write_key") or None

    def authenticate(
        self, headers: Mapping[str, str], raw: bytes, now: datetime, query: Mapping[str, str]
    ) -> str:
        """Return ``"signed"`` or ``"write_key"``; raise otherwise."""
        if not self.configured:
            raise NotConfigured(
                "source 'track' is not configured: set NURTURE_TRACK_SECRET or NURTURE_WRITE_KEYS"
            )
        if has_standard_headers(headers):
            if not self.secrets:
                raise Unauthenticated("signed requests are not enabled (NURTURE_TRACK_SECRET)")
            verify_standard(headers, raw, self.secrets, now, tolerance=self.tolerance)
            return "signed"
        key = self.write_key_of(headers, query)
        if key is None:
            raise Unauthenticated("missing signature or write key")
        if not any(hmac.compare_digest(key.encode(), k.encode()) for k in self.write_keys):
            raise Unauthenticated("unknown write key")
        return "write_key"

    def verify(self, headers: Mapping[str, str], raw_body: bytes, now: datetime) -> None:
        self.authenticate(headers, raw_body, now, {})

    def parse(self, raw_body: bytes, headers: Mapping[str, str]) -> list[InboundEvent]:
        payload = load_json(raw_body)
        items, many = items_of(payload, self.max_events)
        problems: list[FieldProblem] = []
        out = []
        for index, item in enumerate(items):
            prefix = f"[{index}]." if many else ""
            event = parse_canonical(item, prefix, self.name, problems)
            if event is not None:
                if many:
                    event = _with_raw(event, item)
                out.append(event)
        if problems:
            raise InvalidFields(problems)
        return out

    @staticmethod
    def check_write_key_scope(events: Sequence[InboundEvent]) -> None:
        for ev in events:
            if not is_behaviour_type(ev.type):
                raise Forbidden(
                    f"a write key may only send behaviour events, not {ev.type!r}; sign it instead"
                )


def _with_raw(event: InboundEvent, item: Any) -> InboundEvent:
    return InboundEvent(
        source=event.source,
        type=event.type,
        dedupe_key=event.dedupe_key,
        contact=event.contact,
        data=event.data,
        occurred_at=event.occurred_at,
        raw=orjson.dumps(item),
    )


# The prototype's behaviour webhook: {client_code, action, metadata}.
BEHAVIOR_ACTIONS = {
    "click": "link.clicked",
    "open": "email.opened",
    "purchase": "purchase.completed",
    "form_submit": "form.submitted",
    "page_view": "page.viewed",
    "page_visit": "page.viewed",
}


def parse_behavior(raw: bytes, source: str = "track") -> list[InboundEvent]:
    payload = load_json(raw)
    if not isinstance(payload, dict):
        raise MalformedPayload("body must be a JSON object {client_code, action, metadata}")
    problems = []
    client_code = payload.get("client_code")
    action = payload.get("action")
    metadata = payload.get("metadata")
    if client_code in (None, ""):
        problems.append(FieldProblem("client_code", "is required"))
    if not isinstance(action, str) or not action:
        problems.append(FieldProblem("action", "is required"))
    if metadata is not None and not isinstance(metadata, dict):
        problems.append(FieldProblem("metadata", "must be an object"))
    if problems:
        raise InvalidFields(problems)
    assert isinstance(action, str)
    slug = "".join(c if c.isalnum() else "_" for c in action.lower()).strip("_") or "action"
    event_type = BEHAVIOR_ACTIONS.get(action, f"custom.{slug}")
    data = dict(metadata or {})
    data.setdefault("action", action)
    email = normalise_email(str(data["email"])) if data.get("email") else None
    contact = ContactRef(email=email, identities={"client_code": str(client_code)})
    occurred = None
    if isinstance(data.get("timestamp"), str):
        occurred = parse_time(data["timestamp"], "metadata.timestamp", [])
    return [
        InboundEvent(
            source=source,
            type=event_type,
            dedupe_key=content_hash("behavior", client_code, action, data),
            contact=contact,
            data=data,
            occurred_at=occurred,
        )
    ]
