"""Webhook signatures: ``sign()`` next to ``verify()`` so tests build real signed requests.

Everything here runs on the raw bytes, compares in constant time, and takes ``now`` from the
caller (an injected clock), never from the system.
"""

from __future__ import annotations

import base64
import functools
import hmac
from collections.abc import Mapping, Sequence
from datetime import datetime

from nurture.errors import StaleTimestamp, Unauthenticated

STANDARD_HEADERS = ("webhook-id", "webhook-timestamp", "webhook-signature")
SVIX_HEADERS = ("svix-id", "svix-timestamp", "svix-signature")


def _same(expected: str, given: str) -> bool:
    """Constant-time comparison of a computed signature with one from a header, as bytes:
    ``compare_digest`` raises on ``str`` with non-ASCII characters, and a header may hold any
    (Starlette decodes headers as Latin-1), which must be a 401, not a 500."""
    return hmac.compare_digest(expected.encode(), given.encode())


@functools.lru_cache(maxsize=256)
def _secret_bytes(secret: str) -> bytes:
    """Standard Webhooks / Svix secrets are ``whsec_`` + base64 of the key bytes.

    Cached: a handful of configured secrets are decoded on every verified request otherwise.
    """
    raw = secret.removeprefix("whsec_")
    try:
        return base64.b64decode(raw, validate=True)
    except ValueError:
        # Not base64: use the text itself (some senders hand out plain strings).
        return raw.encode()


def _standard_digest(secret: str, signed: bytes) -> str:
    # hmac.digest is the one-shot C path: several times cheaper than hmac.new(...).digest().
    return base64.b64encode(hmac.digest(_secret_bytes(secret), signed, "sha256")).decode()


def standard_signature(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    return "v1," + _standard_digest(secret, f"{msg_id}.{timestamp}.".encode() + body)


def sign_standard(
    secret: str, msg_id: str, timestamp: int, body: bytes, *, svix: bool = False
) -> dict[str, str]:
    """Headers a Standard Webhooks (or, with ``svix=True``, Svix) sender would send."""
    names = SVIX_HEADERS if svix else STANDARD_HEADERS
    return {
        names[0]: msg_id,
        names[1]: str(timestamp),
        names[2]: standard_signature(secret, msg_id, timestamp, body),
    }


def has_standard_headers(headers: Mapping[str, str], *, svix: bool = False) -> bool:
    names = SVIX_HEADERS if svix else STANDARD_HEADERS
    return any(name in headers for name in names)


def verify_standard(
    headers: Mapping[str, str],
    body: bytes,
    secrets: Sequence[str],
    now: datetime,
    *,
    tolerance: int = 300,
    svix: bool = False,
) -> str:
    """Verify a Standard Webhooks / Svix request; return the message id (the dedupe key).

    Any of ``secrets`` may match (rotation). The timestamp must be within ``tolerance`` seconds
    either way: too old is a replay, too new is a forged clock.
    """
    names = SVIX_HEADERS if svix else STANDARD_HEADERS
    msg_id = headers.get(names[0])
    ts_text = headers.get(names[1])
    sig_header = headers.get(names[2])
    if not msg_id or not ts_text or not sig_header:
        raise Unauthenticated(f"missing signature headers ({', '.join(names)})")
    try:
        timestamp = int(ts_text)
    except ValueError:
        raise Unauthenticated(f"{names[1]} is not an integer") from None
    if abs(now.timestamp() - timestamp) > tolerance:
        raise StaleTimestamp(f"{names[1]} outside the {tolerance} s window")
    candidates = [s[3:] for s in sig_header.split() if s.startswith("v1,")]
    signed = f"{msg_id}.{timestamp}.".encode() + body
    for secret in secrets:
        expected = _standard_digest(secret, signed)
        for candidate in candidates:
            if _same(expected, candidate):
                return msg_id
    raise Unauthenticated("signature does not match")


# -- Stripe: ``Stripe-Signature: t=<unix>,v1=<hex>[,v1=<hex>...]`` ---------------------------------
# Signed content is "{t}.{raw body}", keyed with the ``whsec_...`` string as UTF-8 bytes (unlike
# Svix, which base64-decodes the part after the prefix).

STRIPE_HEADER = "stripe-signature"


def stripe_signature(secret: str, timestamp: int, body: bytes) -> str:
    return hmac.digest(secret.encode(), f"{timestamp}.".encode() + body, "sha256").hex()


def sign_stripe(secret: str, timestamp: int, body: bytes) -> dict[str, str]:
    return {STRIPE_HEADER: f"t={timestamp},v1={stripe_signature(secret, timestamp, body)}"}


def verify_stripe(
    headers: Mapping[str, str],
    body: bytes,
    secrets: Sequence[str],
    now: datetime,
    *,
    tolerance: int = 300,
) -> int:
    """Verify ``Stripe-Signature``; return its timestamp.

    Stripe's own library only refuses old timestamps; a timestamp further ahead than the
    tolerance is refused too, as for Standard Webhooks, because it means a forged or broken clock.
    """
    header = headers.get(STRIPE_HEADER)
    if not header:
        raise Unauthenticated("missing Stripe-Signature header")
    timestamp: int | None = None
    candidates = []
    for part in header.split(","):
        key, _, value = part.strip().partition("=")
        if key == "t":
            try:
                timestamp = int(value)
            except ValueError:
                raise Unauthenticated("Stripe-Signature t= is not an integer") from None
        elif key == "v1":
            candidates.append(value)
    if timestamp is None or not candidates:
        raise Unauthenticated("Stripe-Signature needs t= and v1=")
    if abs(now.timestamp() - timestamp) > tolerance:
        raise StaleTimestamp(f"Stripe-Signature timestamp outside the {tolerance} s window")
    for secret in secrets:
        expected = stripe_signature(secret, timestamp, body)
        for candidate in candidates:
            if _same(expected, candidate):
                return timestamp
    raise Unauthenticated("signature does not match")


# -- Cal.com: ``X-Cal-Signature-256`` = hex HMAC-SHA256 of the exact body ------------------------
# No timestamp and no delivery id: nothing protects against replays except the dedupe key.

CALCOM_HEADER = "x-cal-signature-256"


def hex_body_signature(secret: str, body: bytes) -> str:
    return hmac.digest(secret.encode(), body, "sha256").hex()


def sign_hex_body(secret: str, body: bytes, header: str = CALCOM_HEADER) -> dict[str, str]:
    return {header: hex_body_signature(secret, body)}


def verify_hex_body(
    headers: Mapping[str, str],
    body: bytes,
    secrets: Sequence[str],
    header: str = CALCOM_HEADER,
) -> None:
    given = headers.get(header, "").strip().lower()
    if not given:
        raise Unauthenticated(f"missing {header} header")
    if given == "no-secret-provided":
        raise Unauthenticated("the sender has no secret set; set the same secret on both sides")
    for secret in secrets:
        if _same(hex_body_signature(secret, body), given):
            return
    raise Unauthenticated("signature does not match")


# -- Credentials: Bearer token, or Basic ``user:password`` (senders that do not sign, e.g. Brevo) --


def credential_header(secret: str) -> dict[str, str]:
    """The ``Authorization`` header a sender configured with ``secret`` sends."""
    if ":" in secret:
        return {"authorization": "Basic " + base64.b64encode(secret.encode()).decode()}
    return {"authorization": "Bearer " + secret}


def verify_credentials(headers: Mapping[str, str], secrets: Sequence[str]) -> None:
    """Accept a Bearer token equal to a secret, or Basic auth equal to a ``user:password`` one."""
    auth = headers.get("authorization", "").strip()
    scheme, _, value = auth.partition(" ")
    value = value.strip()
    if not value:
        raise Unauthenticated("missing Authorization header (Bearer token or Basic auth)")
    if scheme.lower() == "bearer":
        given = value.encode()
        wanted = [s for s in secrets if ":" not in s]
    elif scheme.lower() == "basic":
        try:
            given = base64.b64decode(value, validate=True)
        except ValueError:
            raise Unauthenticated("Basic credentials are not base64") from None
        wanted = [s for s in secrets if ":" in s]
    else:
        raise Unauthenticated("Authorization must be Bearer or Basic")
    # compare every candidate so the time taken does not say which one nearly matched
    ok = False
    for secret in wanted:
        ok |= hmac.compare_digest(secret.encode(), given)
    if not ok:
        raise Unauthenticated("credentials do not match")
