"""Signed-request builders for every source (tests, benchmarks, ``simulate``).

They use the same ``sign`` functions the sources verify with; the tests additionally sign with
the providers' own libraries to prove the two agree.
"""

from __future__ import annotations

import base64
import os
import uuid
from datetime import datetime
from typing import Any

import orjson

from nurture.providers.signing import (
    credential_header,
    sign_hex_body,
    sign_standard,
    sign_stripe,
)

JSON = "application/json"


def new_secret() -> str:
    """A Standard Webhooks secret: ``whsec_`` + base64 of 24 random bytes."""
    return "whsec_" + base64.b64encode(os.urandom(24)).decode()


def signed_json(
    secret: str,
    payload: Any,
    now: datetime,
    *,
    msg_id: str | None = None,
    svix: bool = False,
    content_type: str = "application/json",
) -> tuple[bytes, dict[str, str]]:
    """Body and headers of a Standard Webhooks (or Svix) signed JSON request."""
    body = payload if isinstance(payload, bytes) else orjson.dumps(payload)
    headers = sign_standard(
        secret, msg_id or f"msg_{uuid.uuid4().hex}", int(now.timestamp()), body, svix=svix
    )
    headers["content-type"] = content_type
    return body, headers


def _body(payload: Any) -> bytes:
    return payload if isinstance(payload, bytes) else orjson.dumps(payload)


def brevo_request(token: str, payload: Any) -> tuple[bytes, dict[str, str]]:
    """Brevo does not sign: a Bearer token, or Basic auth when ``token`` is ``user:password``."""
    return _body(payload), {**credential_header(token), "content-type": JSON}


def resend_request(
    secret: str, payload: Any, now: datetime, *, msg_id: str | None = None
) -> tuple[bytes, dict[str, str]]:
    body = _body(payload)
    headers = sign_standard(
        secret, msg_id or f"msg_{uuid.uuid4().hex}", int(now.timestamp()), body, svix=True
    )
    return body, {**headers, "content-type": JSON}


def calcom_request(secret: str, payload: Any) -> tuple[bytes, dict[str, str]]:
    body = _body(payload)
    return body, {**sign_hex_body(secret, body), "content-type": JSON}


def stripe_request(secret: str, payload: Any, now: datetime) -> tuple[bytes, dict[str, str]]:
    body = _body(payload)
    return body, {**sign_stripe(secret, int(now.timestamp()), body), "content-type": JSON}


def standard_request(
    secret: str,
    payload: Any,
    now: datetime,
    *,
    msg_id: str | None = None,
    content_type: str = JSON,
) -> tuple[bytes, dict[str, str]]:
    """A Standard Webhooks request: forms and generic sources."""
    body = _body(payload)
    headers = sign_standard(secret, msg_id or f"msg_{uuid.uuid4().hex}", int(now.timestamp()), body)
    return body, {**headers, "content-type": content_type}
