"""Standard Webhooks signatures, cross-checked with the reference ``standardwebhooks`` library."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from standardwebhooks.webhooks import Webhook

from nurture.errors import Unauthenticated
from nurture.providers.signing import sign_standard, verify_standard
from nurture.testing import new_secret

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
BODY = b'{"type":"page.viewed","contact":{"email":"a@b.co"}}'


def test_our_signature_verifies_with_reference_library() -> None:
    secret = new_secret()
    headers = sign_standard(secret, "msg_1", int(NOW.timestamp()), BODY)
    wh = Webhook(secret)
    # The reference library checks the timestamp against the real clock; sign at "now".
    live = sign_standard(secret, "msg_1", int(datetime.now(UTC).timestamp()), BODY)
    assert wh.verify(BODY, live) is not None
    assert verify_standard(headers, BODY, [secret], NOW) == "msg_1"


def test_reference_library_signature_verifies_with_ours() -> None:
    secret = new_secret()
    wh = Webhook(secret)
    sig = wh.sign("msg_2", NOW, BODY.decode())
    headers = {
        "webhook-id": "msg_2",
        "webhook-timestamp": str(int(NOW.timestamp())),
        "webhook-signature": sig,
    }
    assert verify_standard(headers, BODY, [secret], NOW) == "msg_2"


@pytest.mark.parametrize("skew", [timedelta(minutes=-6), timedelta(minutes=6)])
def test_timestamp_outside_window_is_refused_both_ways(skew: timedelta) -> None:
    secret = new_secret()
    headers = sign_standard(secret, "m", int((NOW + skew).timestamp()), BODY)
    with pytest.raises(Unauthenticated, match="window"):
        verify_standard(headers, BODY, [secret], NOW)


def test_rotation_accepts_any_listed_secret_and_refuses_removed_one() -> None:
    old, new = new_secret(), new_secret()
    headers = sign_standard(old, "m", int(NOW.timestamp()), BODY)
    assert verify_standard(headers, BODY, [new, old], NOW) == "m"
    with pytest.raises(Unauthenticated):
        verify_standard(headers, BODY, [new], NOW)


def test_tampered_body_and_missing_headers_are_refused() -> None:
    secret = new_secret()
    headers = sign_standard(secret, "m", int(NOW.timestamp()), BODY)
    with pytest.raises(Unauthenticated, match="does not match"):
        verify_standard(headers, BODY + b" ", [secret], NOW)
    with pytest.raises(Unauthenticated, match="missing"):
        verify_standard({"webhook-id": "m"}, BODY, [secret], NOW)


def test_several_signatures_in_header_any_may_match() -> None:
    secret = new_secret()
    headers = sign_standard(secret, "m", int(NOW.timestamp()), BODY)
    headers["webhook-signature"] = "v1,Zm9v " + headers["webhook-signature"] + " v1a,bar"
    assert verify_standard(headers, BODY, [secret], NOW) == "m"
