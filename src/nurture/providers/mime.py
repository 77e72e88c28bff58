"""MIME for the senders that build the message themselves (console, SMTP)."""

from __future__ import annotations

import hashlib
import re
from datetime import datetime
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import format_datetime, formataddr, parseaddr

from nurture.core.channels import OutboundEmail
from nurture.errors import ProviderError


def sender_domain(sender: str) -> str:
    address = parseaddr(sender)[1]
    return address.rsplit("@", 1)[1] if "@" in address else "localhost"


def message_id_for(key: str, sender: str) -> str:
    """A Message-ID derived from the job key: a resend after a crash carries the same id, so
    receiving servers and clients that deduplicate on it show one message."""
    digest = hashlib.sha256(key.encode()).hexdigest()[:32]
    return f"<nurture.{digest}@{sender_domain(sender)}>"


def build(message: OutboundEmail, now: datetime) -> EmailMessage:
    """text/plain and text/html as multipart/alternative, 7-bit clean: headers RFC 2047-encoded,
    bodies quoted-printable (no reliance on the relay's 8BITMIME)."""
    msg = EmailMessage(policy=SMTP)
    msg["From"] = message.sender
    try:
        msg["To"] = formataddr((message.to_name or "", message.to))
    except UnicodeEncodeError:
        raise ProviderError(
            f"address {message.to!r} is not ASCII (SMTPUTF8 is not supported)", permanent=True
        ) from None
    msg["Subject"] = message.subject
    msg["Date"] = format_datetime(now)
    msg["Message-ID"] = message_id_for(message.key, message.sender)
    for name, value in message.headers.items():
        msg[name] = value
    if message.text is not None:
        msg.set_content(message.text, subtype="plain", charset="utf-8", cte="quoted-printable")
        if message.html is not None:
            msg.add_alternative(
                message.html, subtype="html", charset="utf-8", cte="quoted-printable"
            )
    else:
        msg.set_content(message.html or "", subtype="html", charset="utf-8", cte="quoted-printable")
    return msg


_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def file_name(key: str) -> str:
    """A portable file name for a message key; the hash keeps distinct keys distinct."""
    readable = _UNSAFE.sub("_", key)[:80]
    return f"{readable}-{hashlib.sha256(key.encode()).hexdigest()[:10]}.eml"
