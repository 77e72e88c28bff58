from __future__ import annotations

import orjson

from nurture.core import redact


def test_secret_keys_are_masked_at_any_depth() -> None:
    data = {
        "name": "Ann",
        "password": "hunter22",
        "nested": {"api_key": "abc", "items": [{"Authorization": "Bearer x", "ok": 1}]},
        "webhook_secret": "",
    }
    assert redact.value(data) == {
        "name": "Ann",
        "password": "[redacted]",
        "nested": {"api_key": "[redacted]", "items": [{"Authorization": "[redacted]", "ok": 1}]},
        "webhook_secret": "",  # nothing to hide: an empty value stays visible
    }


def test_credentials_inside_values_are_cut() -> None:
    assert redact.value("https://brevo:tok3n@example.com/hook") == (
        "https://[redacted]@example.com/hook"
    )
    assert redact.value("key sk_live_1234567890abcd used") == "key sk_live_[redacted] used"
    assert redact.value("whsec_abcdefghijkl") == "whsec_[redacted]"
    assert redact.value("Bearer nk_0123456789") == "Bearer [redacted]"


def test_headers_mask_signatures_and_authorization() -> None:
    shown = redact.headers(
        {
            "authorization": "Basic YTpi",
            "webhook-signature": "v1,abc",
            "x-cal-signature-256": "f",
            "content-type": "application/json",
            "cookie": "s=1",
        }
    )
    assert shown == {
        "authorization": "[redacted]",
        "webhook-signature": "[redacted]",
        "x-cal-signature-256": "[redacted]",
        "content-type": "application/json",
        "cookie": "[redacted]",
    }


def test_payload_is_indented_json_or_text_and_cut() -> None:
    shown = redact.payload(orjson.dumps({"token": "t", "a": [1]}))
    assert shown == '{\n  "token": "[redacted]",\n  "a": [\n    1\n  ]\n}'
    assert redact.payload(b"not json https://u:p@h/") == "not json https://[redacted]@h/"
    assert redact.payload(b"\xff\xfe") == "\ufffd\ufffd"
    assert redact.payload(None) is None
    long = redact.payload(orjson.dumps({"a": "x" * 100}), limit=20)
    assert long is not None and long.startswith('{\n  "a": "xxxxxxxxx')
    assert long.endswith("more characters)")
