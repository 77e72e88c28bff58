"""MIME for the senders that build the message themselves (console, SMTP).

Written directly rather than through ``email.message.EmailMessage``: the standard library's
header policy machinery took ~4 ms per message, more than everything else a send costs. The
output is what that produced, 7-bit clean: non-ASCII header words RFC 2047-encoded, headers
folded at 78 characters, text/plain and text/html as multipart/alternative in quoted-printable
(no reliance on the relay's 8BITMIME), CRLF line ends. ``tests/unit/messaging`` parses it back
with the standard library's strict policy.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from datetime import datetime
from email.utils import format_datetime, formataddr, parseaddr

from nurture.core.channels import OutboundEmail
from nurture.errors import ProviderError

CRLF = "\r\n"
MAX_LINE = 78
# 45 bytes of UTF-8 encode to 60 base64 characters: an encoded-word of at most 72.
_WORD_BYTES = 45


def sender_domain(sender: str) -> str:
    address = parseaddr(sender)[1]
    return address.rsplit("@", 1)[1] if "@" in address else "localhost"


def message_id_for(key: str, sender: str) -> str:
    """A Message-ID derived from the job key: a resend after a crash carries the same id, so
    receiving servers and clients that deduplicate on it show one message."""
    digest = hashlib.sha256(key.encode()).hexdigest()[:32]
    return f"<nurture.{digest}@{sender_domain(sender)}>"


def _encoded_words(text: str) -> list[str]:
    words: list[str] = []
    chunk = b""
    for ch in text:
        raw = ch.encode("utf-8")
        if len(chunk) + len(raw) > _WORD_BYTES:
            words.append(chunk.decode("utf-8"))
            chunk = b""
        chunk += raw
    if chunk:
        words.append(chunk.decode("utf-8"))
    return [
        "=?utf-8?b?" + base64.b64encode(w.encode("utf-8")).decode("ascii") + "?=" for w in words
    ]


def _tokens(value: str) -> list[str]:
    """The value as space-separated tokens; runs of non-ASCII words become encoded-words
    (the spaces inside a run travel inside the encoding, as RFC 2047 requires)."""
    if value.isascii():
        return value.split(" ")
    out: list[str] = []
    run: list[str] = []
    for word in value.split(" "):
        if word.isascii():
            if run:
                out.extend(_encoded_words(" ".join(run)))
                run = []
            out.append(word)
        else:
            run.append(word)
    if run:
        out.extend(_encoded_words(" ".join(run)))
    return out


def _fold(name: str, tokens: list[str]) -> str:
    lines: list[str] = []
    line = f"{name}:"
    for token in tokens:
        if len(line) + 1 + len(token) > MAX_LINE and line.strip() and line != f"{name}:":
            lines.append(line)
            line = " " + token
        else:
            line += " " + token
    lines.append(line)
    return CRLF.join(lines)


def header(name: str, value: str) -> str:
    """``Name: value`` encoded and folded; CR/LF in the value cannot start a new header."""
    value = " ".join(value.splitlines())
    return _fold(name, _tokens(value))


def _address(name: str, value: str) -> str:
    display, address = parseaddr(value) if name == "From" else ("", value)
    try:
        return _fold(name, [formataddr((display, address or value), charset="utf-8")])
    except UnicodeEncodeError:
        raise ProviderError(
            f"address {value!r} is not ASCII (SMTPUTF8 is not supported)", permanent=True
        ) from None


def _to(message: OutboundEmail) -> str:
    try:
        value = formataddr((message.to_name or "", message.to), charset="utf-8")
    except UnicodeEncodeError:
        raise ProviderError(
            f"address {message.to!r} is not ASCII (SMTPUTF8 is not supported)", permanent=True
        ) from None
    return _fold("To", [value])


def _quoted_printable(text: str) -> str:
    normal = text.replace("\r\n", "\n").replace("\r", "\n")
    if not normal.endswith("\n"):
        normal += "\n"
    encoded = binascii.b2a_qp(normal.encode("utf-8"), quotetabs=False, istext=True)
    return encoded.decode("ascii").replace("\n", CRLF)


def _part(subtype: str, body: str) -> str:
    return (
        f'Content-Type: text/{subtype}; charset="utf-8"{CRLF}'
        f"Content-Transfer-Encoding: quoted-printable{CRLF}{CRLF}" + _quoted_printable(body)
    )


def render(message: OutboundEmail, now: datetime) -> bytes:
    """The message as it goes on the wire (and into the console's ``.eml`` files)."""
    head = [
        _address("From", message.sender),
        _to(message),
        header("Subject", message.subject),
        header("Date", format_datetime(now)),
        header("Message-ID", message_id_for(message.key, message.sender)),
    ]
    head.extend(header(name, value) for name, value in message.headers.items())
    head.append("MIME-Version: 1.0")
    if message.text is not None and message.html is not None:
        boundary = "=_nurture_" + hashlib.sha256(message.key.encode()).hexdigest()[:24]
        # "=" never occurs unescaped in quoted-printable, so the boundary cannot occur in a part.
        head.append(f'Content-Type: multipart/alternative; boundary="{boundary}"')
        # The CRLF before a delimiter belongs to the delimiter, not to the part before it.
        body = (
            f"--{boundary}{CRLF}"
            + _part("plain", message.text)
            + f"{CRLF}--{boundary}{CRLF}"
            + _part("html", message.html)
            + f"{CRLF}--{boundary}--{CRLF}"
        )
        return (CRLF.join(head) + CRLF + CRLF + body).encode("ascii")
    if message.text is not None:
        return (CRLF.join(head) + CRLF + _part("plain", message.text)).encode("ascii")
    return (CRLF.join(head) + CRLF + _part("html", message.html or "")).encode("ascii")


_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def file_name(key: str) -> str:
    """A portable file name for a message key; the hash keeps distinct keys distinct."""
    readable = _UNSAFE.sub("_", key)[:80]
    return f"{readable}-{hashlib.sha256(key.encode()).hexdigest()[:10]}.eml"
