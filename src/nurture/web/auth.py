"""Admin API authentication: ``Authorization: Bearer <api key>``."""

from __future__ import annotations

from fastapi import Request

from nurture.errors import Unauthenticated
from nurture.storage import api_keys
from nurture.web.audit import note_api_key
from nurture.web.state import web_state


def require_api_key(request: Request) -> str:
    """FastAPI dependency; returns the key's name for logging."""
    header = request.headers.get("authorization", "")
    if not header.lower().startswith("bearer "):
        raise Unauthenticated("missing API key (Authorization: Bearer <key>)")
    key = header[7:].strip()
    db = web_state(request).container.db
    with db.read() as conn:
        found = api_keys.find_active(conn, key)
    if found is None:
        raise Unauthenticated("invalid or revoked API key")
    name = str(found["name"])
    note_api_key(request, name)  # the audit middleware records changes under this name
    return name
