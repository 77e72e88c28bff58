"""A mail relay that records every message it accepts:
``python -m tests.system.smtp_sink HOST PORT RECORD_FILE READY_FILE``.

Each accepted DATA becomes one JSON line in ``RECORD_FILE`` (Message-ID, recipients, subject,
the client's address), written before the ``250`` goes back: a message the sender saw accepted
is always on record, and a resend after a lost answer shows up as a second line with the same
Message-ID. It runs as its own process (the scale-out test puts it on the database "host").
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from email import message_from_bytes
from email.policy import default
from pathlib import Path
from typing import Any

import orjson
from aiosmtpd.smtp import SMTP, Envelope, Session

from nurture.runtime import install_stop_signals


class Recorder:
    def __init__(self, path: Path) -> None:
        self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        content = envelope.original_content or b""
        msg = message_from_bytes(content, policy=default)
        peer: Any = session.peer
        line = {
            "message_id": str(msg.get("Message-ID", "")),
            "rcpt": list(envelope.rcpt_tos),
            "subject": str(msg.get("Subject", "")),
            "peer": peer[0] if isinstance(peer, tuple) else str(peer),
            "at": time.time(),
        }
        # One write(2) per line on an O_APPEND descriptor: lines never interleave.
        os.write(self.fd, orjson.dumps(line) + b"\n")
        return "250 Message accepted for delivery"


async def main(host: str, port: int, record: Path, ready: Path) -> None:
    recorder = Recorder(record)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: SMTP(recorder, hostname="sink.test", ident="nurture test sink"), host, port
    )
    stop = asyncio.Event()
    install_stop_signals(stop)
    ready.touch()
    await stop.wait()
    server.close()
    await server.wait_closed()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], int(sys.argv[2]), Path(sys.argv[3]), Path(sys.argv[4])))
