"""The hand-written MIME parses back, with the standard library, to exactly what was meant."""

from __future__ import annotations

import email
from datetime import UTC, datetime
from email import policy
from email.message import EmailMessage

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nurture.core.channels import OutboundEmail
from nurture.errors import ProviderError
from nurture.providers import mime

NOW = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)
# Header text: any printable text, including non-ASCII and long runs without spaces.
header_text = st.text(
    st.characters(blacklist_categories=("Cc", "Cs", "Zl", "Zp")), min_size=1, max_size=200
).filter(lambda s: s.strip() == s and "  " not in s)
body_text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=2000)


def parse(raw: bytes) -> EmailMessage:
    raw.decode("ascii")  # 7-bit clean
    for line in raw.split(b"\r\n"):
        assert len(line) <= 998
    assert b"\n" not in raw.replace(b"\r\n", b"")  # CRLF line ends only
    parsed = email.message_from_bytes(raw, policy=policy.default.clone(raise_on_defect=True))
    assert isinstance(parsed, EmailMessage)
    return parsed


def content(part: EmailMessage) -> str:
    return str(part.get_content()).replace("\r\n", "\n")


def normal(text: str) -> str:
    out = text.replace("\r\n", "\n").replace("\r", "\n")
    return out if out.endswith("\n") else out + "\n"


def outbound(**overrides: object) -> OutboundEmail:
    values: dict[str, object] = {
        "message_id": 7,
        "key": "seq:1:email-1",
        "to": "ann@example.com",
        "sender": "Shop <shop@example.com>",
        "subject": "Hello",
        "html": "<p>Hi</p>",
        "text": "Hi",
    }
    values.update(overrides)
    return OutboundEmail(**values)  # type: ignore[arg-type]


@settings(max_examples=150, deadline=None)
@given(subject=header_text, name=header_text, html=body_text, text=body_text)
def test_round_trip(subject: str, name: str, html: str, text: str) -> None:
    msg = outbound(subject=subject, to_name=name, html=html, text=text)
    parsed = parse(mime.render(msg, NOW))
    assert parsed["Subject"] == subject
    assert parsed["To"].addresses[0].display_name == name
    assert parsed["To"].addresses[0].addr_spec == "ann@example.com"
    assert parsed.get_content_type() == "multipart/alternative"
    plain, rich = list(parsed.iter_parts())
    assert content(plain) == normal(text)
    assert content(rich) == normal(html)


def test_headers_and_single_parts() -> None:
    msg = outbound(
        sender="Boutique Zoé <shop@example.com>",
        headers={
            "List-Unsubscribe": "<https://crm.example.com/u/" + "t" * 90 + ">, "
            "<mailto:unsub@example.com?subject=unsubscribe>",
            "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
        },
        text=None,
    )
    parsed = parse(mime.render(msg, NOW))
    assert parsed["From"].addresses[0].display_name == "Boutique Zoé"
    assert parsed["Message-ID"] == mime.message_id_for(msg.key, msg.sender)
    assert parsed["Date"].datetime == NOW
    assert str(parsed["List-Unsubscribe"]).startswith("<https://crm.example.com/u/ttt")
    assert parsed["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert parsed.get_content_type() == "text/html"
    assert content(parsed) == "<p>Hi</p>\n"
    only_text = parse(mime.render(outbound(html=None, text="line\n.\nend"), NOW))
    assert only_text.get_content_type() == "text/plain"
    assert content(only_text) == "line\n.\nend\n"


def test_a_line_break_in_a_header_value_cannot_add_a_header() -> None:
    raw = mime.render(outbound(subject="Hi\r\nBcc: victim@example.com"), NOW)
    parsed = parse(raw)
    assert parsed["Bcc"] is None
    assert parsed["Subject"] == "Hi Bcc: victim@example.com"


def test_a_non_ascii_address_is_refused() -> None:
    with pytest.raises(ProviderError, match="not ASCII") as caught:
        mime.render(outbound(to="zoé@exemple.fr"), NOW)
    assert caught.value.permanent
