"""Secrets out of what people see: payloads and headers shown in the console."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import orjson

MASK = "[redacted]"
SECRET_KEY = re.compile(
    r"(secret|token|password|passwd|api[-_]?key|apikey|authorization|signature|credential|"
    r"cookie|session|private|card[-_]?number|cvc|cvv|iban)",
    re.IGNORECASE,
)
# Credentials inside values: URLs with user:password@, bearer tokens, webhook secrets.
_URL_CREDENTIALS = re.compile(r"(?<=://)[^/@\s:]+:[^/@\s]+@")
_TOKENS = re.compile(r"\b(whsec_|sk_live_|sk_test_|rk_live_|nk_|Bearer\s+)[A-Za-z0-9+/=._-]{6,}")


def _text(value: str) -> str:
    value = _URL_CREDENTIALS.sub(MASK + "@", value)
    return _TOKENS.sub(lambda m: m.group(1) + MASK, value)


def value(data: Any) -> Any:
    """A copy of ``data`` with secret-looking keys masked and credentials in strings cut."""
    if isinstance(data, Mapping):
        return {
            str(k): MASK if SECRET_KEY.search(str(k)) and v not in (None, "") else value(v)
            for k, v in data.items()
        }
    if isinstance(data, list):
        return [value(v) for v in data]
    if isinstance(data, str):
        return _text(data)
    return data


def headers(items: Mapping[str, str]) -> dict[str, str]:
    return {k: MASK if SECRET_KEY.search(k) else _text(v) for k, v in items.items()}


def payload(raw: bytes | None, limit: int = 16_384) -> str | None:
    """The body as indented JSON with secrets masked, or as text when it is not JSON; cut at
    ``limit`` characters."""
    if raw is None:
        return None
    try:
        shown = orjson.dumps(value(orjson.loads(raw)), option=orjson.OPT_INDENT_2).decode()
    except orjson.JSONDecodeError:
        shown = _text(bytes(raw[: limit * 2]).decode("utf-8", errors="replace"))
    if len(shown) > limit:
        shown = shown[:limit] + f"\n... ({len(shown) - limit} more characters)"
    return shown
