"""Our sign/verify agree with the providers' own libraries, and refuse what they refuse."""

from __future__ import annotations

import base64
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest
from stripe import SignatureVerificationError, WebhookSignature
from svix.webhooks import Webhook as SvixWebhook

from nurture.errors import Unauthenticated
from nurture.providers.signing import (
    credential_header,
    sign_hex_body,
    sign_stripe,
    verify_credentials,
    verify_hex_body,
    verify_standard,
    verify_stripe,
)
from nurture.testing import new_secret

NOW = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)
BODY = b'{"id":"evt_1","type":"payment_intent.succeeded"}'


def test_stripe_header_matches_the_stripe_library() -> None:
    stamp = int(NOW.timestamp())
    ours = sign_stripe("whsec_abc", stamp, BODY)["stripe-signature"]
    theirs = WebhookSignature.generate_signature_header(BODY.decode(), "whsec_abc", stamp)
    assert ours == theirs
    # and the library accepts what we sign (its tolerance is relative to the real clock)
    with pytest.raises(SignatureVerificationError):
        WebhookSignature.verify_header(BODY.decode(), ours, "whsec_abc", tolerance=300)
    WebhookSignature.verify_header(BODY.decode(), ours, "whsec_abc", tolerance=None)


def test_stripe_verify_accepts_any_listed_signature_and_any_secret() -> None:
    stamp = int(NOW.timestamp())
    good = sign_stripe("whsec_new", stamp, BODY)["stripe-signature"].split(",")[1]
    header = {"stripe-signature": f"t={stamp},v1=deadbeef,{good},v0=ignored"}
    assert verify_stripe(header, BODY, ["whsec_old", "whsec_new"], NOW) == stamp
    with pytest.raises(Unauthenticated, match="does not match"):
        verify_stripe(header, BODY, ["whsec_old"], NOW)
    with pytest.raises(Unauthenticated, match="window"):
        verify_stripe(header, BODY, ["whsec_new"], NOW + timedelta(seconds=301))
    with pytest.raises(Unauthenticated, match="needs t= and v1="):
        verify_stripe({"stripe-signature": "v1=abc"}, BODY, ["whsec_new"], NOW)
    with pytest.raises(Unauthenticated, match="not an integer"):
        verify_stripe({"stripe-signature": "t=x,v1=abc"}, BODY, ["whsec_new"], NOW)


def test_svix_library_signature_verifies_with_svix_headers() -> None:
    secret = new_secret()
    sig = SvixWebhook(secret).sign("msg_1", NOW, BODY.decode())
    headers = {
        "svix-id": "msg_1",
        "svix-timestamp": str(int(NOW.timestamp())),
        "svix-signature": sig,
    }
    assert verify_standard(headers, BODY, [secret], NOW, svix=True) == "msg_1"


def test_hex_body_signature() -> None:
    headers = sign_hex_body("s3cret", BODY)
    verify_hex_body(headers, BODY, ["other", "s3cret"])
    upper = {k: v.upper() for k, v in headers.items()}
    verify_hex_body(upper, BODY, ["s3cret"])
    with pytest.raises(Unauthenticated):
        verify_hex_body(headers, BODY + b" ", ["s3cret"])
    with pytest.raises(Unauthenticated, match="no secret"):
        verify_hex_body({"x-cal-signature-256": "no-secret-provided"}, BODY, ["s3cret"])


def test_credentials_bearer_and_basic() -> None:
    secrets = ["tok-123456", "user:pa:ss"]
    verify_credentials(credential_header("tok-123456"), secrets)
    verify_credentials(credential_header("user:pa:ss"), secrets)
    basic = "Basic " + base64.b64encode(b"user:pa:ss").decode()
    verify_credentials({"authorization": basic}, secrets)
    # a Basic secret is not a Bearer token and vice versa
    with pytest.raises(Unauthenticated):
        verify_credentials({"authorization": "Bearer user:pa:ss"}, secrets)
    with pytest.raises(Unauthenticated):
        verify_credentials(
            {"authorization": "Basic " + base64.b64encode(b"tok-123456").decode()}, secrets
        )
    with pytest.raises(Unauthenticated, match="not base64"):
        verify_credentials({"authorization": "Basic !!!"}, secrets)
    with pytest.raises(Unauthenticated, match="Bearer or Basic"):
        verify_credentials({"authorization": "Token tok-123456"}, secrets)
    with pytest.raises(Unauthenticated, match="missing"):
        verify_credentials({}, secrets)


@pytest.mark.parametrize(
    "check",
    [
        lambda: verify_hex_body({"x-cal-signature-256": "caf\xe9"}, BODY, ["s3cret"]),
        lambda: verify_standard(
            {
                "webhook-id": "msg_1",
                "webhook-timestamp": str(int(NOW.timestamp())),
                "webhook-signature": "v1,sign\xe9",
            },
            BODY,
            [new_secret()],
            NOW,
        ),
        lambda: verify_stripe(
            {"stripe-signature": f"t={int(NOW.timestamp())},v1=\xe9\xe9"}, BODY, ["whsec_x"], NOW
        ),
        lambda: verify_credentials({"authorization": "Bearer jet\xe9"}, ["tok-123456"]),
    ],
)
def test_non_ascii_signature_headers_are_refused_not_a_crash(check: Callable[[], object]) -> None:
    # hmac.compare_digest raises TypeError on non-ASCII str; a header may hold Latin-1 text
    with pytest.raises(Unauthenticated):
        check()
