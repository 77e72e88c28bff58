"""Signed unsubscribe tokens and links (RFC 8058 one-click).

A token names the contact and carries an HMAC over it keyed with ``NURTURE_SECRET_KEY``. It
does not expire: an old e-mail's link must still work, and all it can do is unsubscribe.
"""

from __future__ import annotations

import base64
import hashlib
import hmac

from nurture.config import Settings
from nurture.errors import Unauthenticated

# Only the console provider (local development, files on disk) may run without a secret key.
DEV_KEY = "nurture-development-only-unsubscribe-key"


def signing_key(settings: Settings) -> str:
    return settings.secret_key or DEV_KEY


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _sig(key: str, contact_id: int, purpose: str) -> str:
    # The purpose is signed: an unsubscribe token never confirms a signup, nor the reverse.
    mac = hmac.new(key.encode(), f"{purpose}:{contact_id}".encode(), hashlib.sha256)
    return _b64(mac.digest()[:18])


def make_token(key: str, contact_id: int, purpose: str = "unsubscribe") -> str:
    """``purpose`` "confirm" signs a double opt-in link, whose number is the consent id."""
    return f"{contact_id}.{_sig(key, contact_id, purpose)}"


def read_token(key: str, token: str, purpose: str = "unsubscribe") -> int:
    """The id a genuine token names; ``Unauthenticated`` for anything else."""
    head, _, sig = token.partition(".")
    if not head.isdigit() or not sig or len(head) > 19:
        raise Unauthenticated(f"malformed {purpose} token")
    contact_id = int(head)
    if not hmac.compare_digest(sig, _sig(key, contact_id, purpose)):
        raise Unauthenticated(f"{purpose} token signature does not match")
    return contact_id


def confirm_url(public_url: str, key: str, consent_id: int) -> str:
    """The double opt-in link of a consent (``web/confirm.py``)."""
    return f"{public_url.rstrip('/')}/confirm/{make_token(key, consent_id, 'confirm')}"


def unsubscribe_url(public_url: str, key: str, contact_id: int) -> str:
    return f"{public_url.rstrip('/')}/u/{make_token(key, contact_id)}"


def list_unsubscribe_headers(url: str, mailto: str | None) -> dict[str, str]:
    targets = [f"<{url}>"]
    if mailto:
        targets.append(f"<mailto:{mailto}?subject=unsubscribe>")
    return {
        "List-Unsubscribe": ", ".join(targets),
        "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
    }
