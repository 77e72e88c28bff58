"""Resend delivery events, signed with Svix, -> ``email.*``.

``svix-id`` is stable across retries and is the dedupe key. The top-level ``created_at`` is the
event's time (``data.created_at`` is the message's). Resend sends one event per recipient without
saying which recipient: a message to several addresses is stored without a contact.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from nurture.core.events import ContactRef, InboundEvent
from nurture.errors import FieldProblem, InvalidFields, NotConfigured, Unauthenticated
from nurture.providers.payloads import email_of, from_iso, load_object, text_of, vendor_type
from nurture.providers.signing import STANDARD_HEADERS, SVIX_HEADERS, verify_standard

EVENTS: dict[str, tuple[str, dict[str, Any]]] = {
    "email.sent": ("email.sent", {}),
    "email.delivered": ("email.delivered", {}),
    "email.delivery_delayed": ("email.deferred", {}),
    "email.bounced": ("email.bounced", {}),
    "email.complained": ("email.complained", {}),
    "email.opened": ("email.opened", {"unique": False, "proxy": False}),
    "email.clicked": ("email.clicked", {}),
    "email.failed": ("email.failed", {}),
    # Resend refused to send to an address on its suppression list
    "email.suppressed": ("email.blocked", {}),
}

MESSAGE_ID_TAG = "nurture_message_id"


def tags_of(value: Any) -> dict[str, str]:
    """Resend documents tags both as ``[{name, value}]`` and as an object; accept both."""
    if isinstance(value, dict):
        return {str(k): str(v) for k, v in value.items()}
    out = {}
    if isinstance(value, list):
        for tag in value:
            if isinstance(tag, dict) and "name" in tag:
                out[str(tag["name"])] = str(tag.get("value", ""))
    return out


def bounce_kind(bounce: Any) -> str:
    kind = str(bounce.get("type", "")).lower() if isinstance(bounce, dict) else ""
    return "soft" if kind in ("transient", "soft", "undetermined") else "hard"


def message_data(body: Mapping[str, Any], fixed: Mapping[str, Any]) -> dict[str, Any]:
    inner = body.get("data") if isinstance(body.get("data"), dict) else {}
    assert isinstance(inner, dict)
    tags = tags_of(inner.get("tags"))
    data: dict[str, Any] = {
        "message_id": tags.get(MESSAGE_ID_TAG),
        "provider_message_id": text_of(inner.get("email_id")),
        **fixed,
    }
    if body.get("type") == "email.bounced":
        bounce = inner.get("bounce")
        data["kind"] = bounce_kind(bounce)
        if isinstance(bounce, dict) and text_of(bounce.get("message")):
            data["reason"] = text_of(bounce.get("message"))
    click = inner.get("click")
    if isinstance(click, dict) and text_of(click.get("link")):
        data["link"] = text_of(click.get("link"))
    failed = inner.get("failed")
    if isinstance(failed, dict) and text_of(failed.get("reason")):
        data["reason"] = text_of(failed.get("reason"))
    for key in ("subject", "from", "broadcast_id"):
        if inner.get(key) not in (None, ""):
            data[key] = inner[key]
    if tags:
        data["tags"] = tags
    return data


class ResendSource:
    name = "resend"

    def __init__(
        self,
        secrets: Sequence[str],
        *,
        tolerance: int = 300,
        secret_env: str = "NURTURE_RESEND_WEBHOOK_SECRET",
    ) -> None:
        self.secrets = list(secrets)
        self.tolerance = tolerance
        self.secret_env = secret_env

    def verify(self, headers: Mapping[str, str], raw_body: bytes, now: datetime) -> None:
        if not self.secrets:
            raise NotConfigured(f"source 'resend' is not configured: set {self.secret_env}")
        svix = SVIX_HEADERS[0] in headers or STANDARD_HEADERS[0] not in headers
        verify_standard(headers, raw_body, self.secrets, now, tolerance=self.tolerance, svix=svix)

    def parse(self, raw_body: bytes, headers: Mapping[str, str]) -> list[InboundEvent]:
        msg_id = headers.get(SVIX_HEADERS[0]) or headers.get(STANDARD_HEADERS[0])
        if not msg_id:
            raise Unauthenticated("missing svix-id")
        body = load_object(raw_body)
        name = body.get("type")
        if not isinstance(name, str) or not name:
            raise InvalidFields([FieldProblem("type", "is required")])
        inner = body.get("data")
        if inner is not None and not isinstance(inner, dict):
            raise InvalidFields([FieldProblem("data", "must be an object")])
        inner = inner or {}
        when = from_iso(body.get("created_at"))
        known = EVENTS.get(name)
        if known is None:
            return [
                InboundEvent(
                    source=self.name,
                    type=vendor_type("resend", name),
                    dedupe_key=msg_id,
                    contact=None,
                    data={"event": name},
                    occurred_at=when,
                )
            ]
        event_type, fixed = known
        data = message_data(body, fixed)
        to = inner.get("to")
        recipients = [to] if isinstance(to, str) else list(to) if isinstance(to, list) else []
        emails = [email_of(r) for r in recipients]
        contact = None
        if len(emails) == 1 and emails[0] is not None:
            contact = ContactRef(email=emails[0])
        else:
            # Several recipients (which one is unknown) or none usable: stored unattributed.
            data["recipients"] = [str(r) for r in recipients]
        return [
            InboundEvent(
                source=self.name,
                type=event_type,
                dedupe_key=msg_id,
                contact=contact,
                data=data,
                occurred_at=when,
            )
        ]
