"""Reading provider payloads: JSON, provider timestamps, recipients, access lists.

Shared by the provider sources; each source keeps its own vocabulary in its own module.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import orjson

from nurture.core.events import InboundEvent, normalise_email
from nurture.errors import Forbidden, MalformedPayload, PayloadTooLarge

_SLUG = re.compile(r"[^a-z0-9]+")


def load_json(raw: bytes) -> Any:
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise MalformedPayload(f"body is not valid JSON: {exc}") from None


def load_object(raw: bytes) -> dict[str, Any]:
    payload = load_json(raw)
    if not isinstance(payload, dict):
        raise MalformedPayload("body must be a JSON object")
    return payload


def slug(name: str) -> str:
    """``BOOKING_REQUESTED`` -> ``booking_requested``: a segment of a canonical event type."""
    return _SLUG.sub("_", name.lower()).strip("_") or "unknown"


def vendor_type(vendor: str, name: str) -> str:
    """The canonical name of an event nurture stores but has no meaning for (``calcom.x``)."""
    return f"{vendor}." + ".".join(slug(part) for part in name.split("."))


def from_epoch(value: Any, *, millis: bool = False) -> datetime | None:
    """A provider's Unix time (seconds, or milliseconds) as aware UTC; ``None`` if unusable."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return None
    try:
        number = float(value)
    except ValueError:
        return None
    if millis:
        number /= 1000
    try:
        return datetime.fromtimestamp(number, UTC)
    except (OverflowError, OSError, ValueError):
        return None


def from_iso(value: Any) -> datetime | None:
    """An ISO 8601 time with an offset; naive or unreadable values give ``None``."""
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else None


def email_of(value: Any) -> str | None:
    return normalise_email(value) if isinstance(value, str) else None


def text_of(value: Any) -> str | None:
    if value is None or isinstance(value, dict | list):
        return None
    text = str(value).strip()
    return text or None


def with_raw(event: InboundEvent, item: Any) -> InboundEvent:
    """Keep the item's own bytes when a delivery carries several events."""
    return replace(event, raw=orjson.dumps(item))


def batch_items(payload: Any, max_events: int) -> list[Any]:
    if isinstance(payload, list):
        if len(payload) > max_events:
            raise PayloadTooLarge(f"at most {max_events} events per request, got {len(payload)}")
        if not payload:
            raise MalformedPayload("empty array")
        return payload
    return [payload]


class IpAllowlist:
    """Client addresses a source accepts; empty means any (the credentials still apply)."""

    def __init__(self, networks: Sequence[str]) -> None:
        self.networks = [ipaddress.ip_network(n, strict=False) for n in networks]

    def check(self, client: str | None) -> None:
        if not self.networks:
            return
        try:
            address = ipaddress.ip_address(client or "")
        except ValueError:
            raise Forbidden("client address is not in the source's IP allowlist") from None
        if not any(address in net for net in self.networks):
            raise Forbidden("client address is not in the source's IP allowlist")
