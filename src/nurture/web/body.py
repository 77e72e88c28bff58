"""Reading webhook bodies: the raw bytes once, the size limit enforced while reading.

Two doors onto the same rules: ``read_limited``/``require_media_type`` for Starlette requests
(admin API, unsubscribe), ``read_body``/``check_media_type`` for the webhook hot path, which works
on the ASGI scope and ``receive`` directly (see ``web/webhooks.py``).
"""

from __future__ import annotations

from collections.abc import Mapping

from starlette.requests import ClientDisconnect, Request
from starlette.types import Receive

from nurture.errors import PayloadTooLarge, UnsupportedMediaType


def _check_declared(declared: str | None, limit: int) -> None:
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"body is {declared} bytes; the limit is {limit}")


def _too_large(limit: int) -> PayloadTooLarge:
    return PayloadTooLarge(f"body exceeds the limit of {limit} bytes")


async def read_limited(request: Request, limit: int) -> bytes:
    _check_declared(request.headers.get("content-length"), limit)
    chunks = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _too_large(limit)
        chunks.append(chunk)
    return b"".join(chunks)


async def read_body(receive: Receive, headers: Mapping[str, str], limit: int) -> bytes:
    """The whole body from ASGI ``receive``; refused as soon as it passes ``limit`` bytes."""
    _check_declared(headers.get("content-length"), limit)
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnect()
        chunk: bytes = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise _too_large(limit)
        if not message.get("more_body", False):
            if not chunks:
                return chunk  # the usual case: the body came in one message
            chunks.append(chunk)
            return b"".join(chunks)
        chunks.append(chunk)


def media_type_of(content_type: str) -> str:
    return content_type.split(";", 1)[0].strip().lower()


def media_type(request: Request) -> str:
    return media_type_of(request.headers.get("content-type", ""))


def check_media_type(kind: str, *allowed: str) -> str:
    if kind not in allowed:
        raise UnsupportedMediaType(
            f"Content-Type {kind or '(none)'!r} is not accepted; use {' or '.join(allowed)}"
        )
    return kind


def require_media_type(request: Request, *allowed: str) -> str:
    return check_media_type(media_type(request), *allowed)
