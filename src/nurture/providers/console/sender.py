"""The default channel with no credentials: one ``.eml`` file per message and one log line.

Files are named by the message key, so a resend after a crash replaces the file instead of
adding a second one.
"""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path

from nurture.clock import Clock
from nurture.core.channels import OutboundEmail, OutboundSms, SendResult
from nurture.providers import mime

log = logging.getLogger("nurture.console")


def _write_atomically(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


class ConsoleEmail:
    name = "console"

    def __init__(self, outbox: Path, clock: Clock) -> None:
        self.outbox = outbox
        self.clock = clock

    async def send(self, message: OutboundEmail, *, uncertain: bool) -> SendResult:
        path = self.outbox / mime.file_name(message.key)
        await asyncio.to_thread(_write_atomically, path, mime.render(message, self.clock.now()))
        log.info(
            "e-mail written to the outbox",
            extra={
                "action": "email.console",
                "to": message.to,
                "subject": message.subject,
                "file": str(path),
            },
        )
        return SendResult(
            mime.message_id_for(message.key, message.sender), "replaced_file" if uncertain else None
        )


class ConsoleSms:
    name = "console"

    def __init__(self, outbox: Path) -> None:
        self.outbox = outbox

    async def send(self, message: OutboundSms, *, uncertain: bool) -> SendResult:
        path = self.outbox / mime.file_name(message.key).replace(".eml", ".sms.txt")
        body = f"To: {message.to}\nFrom: {message.sender}\n\n{message.text}\n".encode()
        await asyncio.to_thread(_write_atomically, path, body)
        log.info("SMS written to the outbox", extra={"action": "sms.console", "to": message.to})
        return SendResult(
            f"console-sms-{message.message_id}", "replaced_file" if uncertain else None
        )
