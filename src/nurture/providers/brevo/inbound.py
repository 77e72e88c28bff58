"""Brevo delivery events (transactional and marketing) -> ``email.*``.

Brevo does not sign: the request carries a Bearer token or Basic auth set when the webhook was
created, optionally from Brevo's published address ranges. It gives no event id either, so the
dedupe key is a hash of what identifies the event; retries repeat those fields exactly.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import orjson

from nurture.core.events import ContactRef, InboundEvent, content_hash
from nurture.errors import FieldProblem, InvalidFields, MalformedPayload, NotConfigured
from nurture.providers.payloads import (
    IpAllowlist,
    batch_items,
    email_of,
    from_epoch,
    load_json,
    text_of,
    vendor_type,
    with_raw,
)
from nurture.providers.signing import verify_credentials

# Brevo's payload value -> (canonical type, fixed data). Transactional and marketing payloads
# share these snake_case names; the camelCase ones in Brevo's settings UI never appear in bodies.
EVENTS: dict[str, tuple[str, dict[str, Any]]] = {
    "request": ("email.sent", {}),
    "delivered": ("email.delivered", {}),
    "deferred": ("email.deferred", {}),
    "soft_bounce": ("email.bounced", {"kind": "soft"}),
    "hard_bounce": ("email.bounced", {"kind": "hard"}),
    # the address cannot receive mail at all: as permanent as a hard bounce
    "invalid_email": ("email.bounced", {"kind": "hard"}),
    "blocked": ("email.blocked", {}),
    "spam": ("email.complained", {}),
    "opened": ("email.opened", {"unique": False, "proxy": False}),
    "unique_opened": ("email.opened", {"unique": True, "proxy": False}),
    "proxy_open": ("email.opened", {"unique": False, "proxy": True}),
    "unique_proxy_open": ("email.opened", {"unique": True, "proxy": True}),
    "click": ("email.clicked", {}),
    "unsubscribed": ("email.unsubscribed", {}),
    "unsubscribe": ("email.unsubscribed", {}),
    "error": ("email.failed", {}),
}

# The CRM prototype's ``/webhook/email`` vocabulary, accepted on that route only.
LEGACY_EVENTS: dict[str, tuple[str, dict[str, Any]]] = {
    "sent": ("email.sent", {}),
    "opened": ("email.opened", {"unique": False, "proxy": False}),
    "clicked": ("email.clicked", {}),
    "bounce": ("email.bounced", {"kind": "hard"}),
    "complaint": ("email.complained", {}),
    "unsubscribed": ("email.unsubscribed", {}),
}

CUSTOM_HEADER = "X-Mailin-custom"
MESSAGE_ID_KEY = "nurture_message_id"


def dedupe_key(item: Mapping[str, Any]) -> str:
    """Stable across Brevo's retries of one event; different for any other event."""
    return content_hash(
        "brevo",
        item.get("message-id") or item.get("camp_id"),
        item.get("event"),
        item.get("email"),
        item.get("ts_epoch") if item.get("ts_epoch") is not None else item.get("ts_event"),
        item.get("link") or item.get("URL"),
    )


def occurred_at(item: Mapping[str, Any]) -> datetime | None:
    # Only ts_epoch (ms) is reliably UTC; ts_event/ts (s) are the fallbacks for marketing events.
    return (
        from_epoch(item.get("ts_epoch"), millis=True)
        or from_epoch(item.get("ts_event"))
        or from_epoch(item.get("ts"))
    )


def _custom(item: Mapping[str, Any]) -> Any:
    value = item.get(CUSTOM_HEADER)
    if isinstance(value, str):
        try:
            return orjson.loads(value)
        except orjson.JSONDecodeError:
            return value
    return value


def _data(item: Mapping[str, Any], fixed: Mapping[str, Any]) -> dict[str, Any]:
    custom = _custom(item)
    ours = custom.get(MESSAGE_ID_KEY) if isinstance(custom, dict) else None
    data: dict[str, Any] = {
        "message_id": text_of(ours),
        "provider_message_id": text_of(item.get("message-id")),
        **fixed,
    }
    link = text_of(item.get("link") or item.get("URL"))
    if link is not None:
        data["link"] = link
    reason = text_of(item.get("reason"))
    if reason is not None:
        data["reason"] = reason
    elif item.get("event") == "invalid_email":
        data["reason"] = "invalid_email"
    if custom is not None:
        data["custom"] = custom
    for key, name in (
        ("subject", "subject"),
        ("template_id", "template_id"),
        ("camp_id", "campaign_id"),
        ("campaign name", "campaign_name"),
    ):
        if item.get(key) not in (None, ""):
            data[name] = item[key]
    tags = item.get("tags")
    if tags is None and item.get("tag") not in (None, ""):
        tags = [item["tag"]]
    if tags:
        data["tags"] = tags
    return data


class BrevoSource:
    name = "brevo"

    def __init__(
        self,
        secrets: Sequence[str],
        *,
        ip_allowlist: Sequence[str] = (),
        max_events: int = 500,
        secret_env: str = "NURTURE_BREVO_WEBHOOK_TOKEN",
    ) -> None:
        self.secrets = list(secrets)
        self.allowlist = IpAllowlist(ip_allowlist)
        self.max_events = max_events
        self.secret_env = secret_env

    def _require_configured(self) -> None:
        if not self.secrets:
            raise NotConfigured(f"source 'brevo' is not configured: set {self.secret_env}")

    def check_client(self, client: str | None) -> None:
        """The IP allowlist, checked before the body is read."""
        self._require_configured()
        self.allowlist.check(client)

    def verify(self, headers: Mapping[str, str], raw_body: bytes, now: datetime) -> None:
        self._require_configured()
        verify_credentials(headers, self.secrets)

    def parse(self, raw_body: bytes, headers: Mapping[str, str]) -> list[InboundEvent]:
        return self.parse_items(load_json(raw_body), legacy=False)

    def parse_legacy(self, raw_body: bytes) -> list[InboundEvent]:
        """``POST /webhook/email``: Brevo's names plus the prototype's ``sent``, ``clicked``..."""
        return self.parse_items(load_json(raw_body), legacy=True)

    def parse_items(self, payload: Any, *, legacy: bool) -> list[InboundEvent]:
        items = batch_items(payload, self.max_events)
        many = len(items) > 1 or isinstance(payload, list)
        problems: list[FieldProblem] = []
        out = []
        for index, item in enumerate(items):
            prefix = f"[{index}]." if many else ""
            if not isinstance(item, dict):
                if not many:
                    raise MalformedPayload("body must be a JSON object or an array of them")
                problems.append(FieldProblem(f"[{index}]", "must be an object"))
                continue
            event = self._event(item, prefix, legacy, problems)
            if event is not None:
                out.append(with_raw(event, item) if many else event)
        if problems:
            raise InvalidFields(problems)
        return out

    def _event(
        self, item: dict[str, Any], prefix: str, legacy: bool, problems: list[FieldProblem]
    ) -> InboundEvent | None:
        name = item.get("event")
        if not isinstance(name, str) or not name:
            problems.append(FieldProblem(f"{prefix}event", "is required"))
            return None
        known = (LEGACY_EVENTS.get(name) if legacy else None) or EVENTS.get(name)
        email = email_of(item.get("email"))
        if known is None:
            # Stored and acknowledged, but no contact: nothing downstream acts on it.
            data: dict[str, Any] = {"event": name}
            if email:
                data["email"] = email
            return InboundEvent(
                source=self.name,
                type=vendor_type("brevo", name),
                dedupe_key=dedupe_key(item),
                contact=None,
                data=data,
                occurred_at=occurred_at(item),
            )
        event_type, fixed = known
        data = _data(item, fixed)
        if email is None:
            # Authentic but unattributable: stored with no contact (see docs/events.md).
            data["recipient"] = text_of(item.get("email"))
        return InboundEvent(
            source=self.name,
            type=event_type,
            dedupe_key=dedupe_key(item),
            contact=ContactRef(email=email) if email else None,
            data=data,
            occurred_at=occurred_at(item),
        )
