"""The SMTP connection pool against a real aiosmtpd server: reuse, limits, and dropped
connections that must neither lose an e-mail nor resend one the server accepted."""

from __future__ import annotations

import asyncio
import email
from collections.abc import Iterator
from typing import Any

import pytest
from aiosmtpd.controller import Controller

from nurture.clock import VirtualClock
from nurture.core.channels import SendUncertain
from nurture.database.engine import Database
from nurture.providers.smtp.sender import SmtpEmail
from nurture.storage import messages as message_store
from nurture.testing import free_port
from tests.helpers import Job, email_job, make_delivery, new_contact


class Relay:
    """Accepts everything; ``drop_after_reply`` / ``drop_before_reply`` close the connection
    after the n-th message (1-based) was answered 250, or after it was received but before
    the answer went out (the server has it, the client never learns)."""

    def __init__(self) -> None:
        self.messages: list[bytes] = []
        self.sessions: set[int] = set()
        self.resets = 0
        self.drop_after_reply: set[int] = set()
        self.drop_before_reply: set[int] = set()

    async def handle_RSET(self, server: Any, session: Any, envelope: Any) -> str:
        self.resets += 1
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append(envelope.content)
        self.sessions.add(id(session))
        n = len(self.messages)
        if n in self.drop_before_reply:
            server.transport.close()
        elif n in self.drop_after_reply:
            asyncio.get_running_loop().call_soon(server.transport.close)
        return "250 OK"

    def ids(self) -> list[str]:
        return [str(email.message_from_bytes(raw)["Message-ID"]) for raw in self.messages]


@pytest.fixture
def relay() -> Iterator[tuple[int, Relay]]:
    handler = Relay()
    port = free_port()
    controller = Controller(handler, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield port, handler
    finally:
        controller.stop()


def jobs_for(db: Database, clock: VirtualClock, n: int) -> list[Job]:
    return [
        email_job(new_contact(db, clock, email=f"c{i}@example.com"), key=f"pool:{i}")
        for i in range(n)
    ]


async def send_all(delivery: Any, jobs: list[Job]) -> list[BaseException | None]:
    results = await asyncio.gather(*(delivery.send_email(j) for j in jobs), return_exceptions=True)
    return [r if isinstance(r, BaseException) else None for r in results]


def statuses(db: Database, jobs: list[Job]) -> list[str]:
    with db.read() as conn:
        return [message_store.get_by_key(conn, j.key)["status"] for j in jobs]  # type: ignore[index]


def test_connections_are_reused_with_rset_and_renewed_after_the_limit(
    db: Database, clock: VirtualClock, relay: tuple[int, Relay]
) -> None:
    port, server = relay
    channel = SmtpEmail(
        f"smtp://127.0.0.1:{port}", clock, timeout=10, pool_size=3, max_per_connection=10
    )
    delivery = make_delivery(db, clock, channel)
    jobs = jobs_for(db, clock, 40)
    assert asyncio.run(send_all(delivery, jobs)) == [None] * 40
    assert len(server.messages) == 40 and len(set(server.ids())) == 40
    # 40 messages, at most 10 a connection: at least 4 connections, far fewer than 40.
    assert 4 <= channel.connections_opened <= 3 + 4
    assert server.resets >= 40 - channel.connections_opened  # RSET before every reuse
    assert set(statuses(db, jobs)) == {"sent"}
    channel.close()


def test_a_connection_closed_between_messages_is_replaced_without_loss(
    db: Database, clock: VirtualClock, relay: tuple[int, Relay]
) -> None:
    port, server = relay
    server.drop_after_reply = {3, 7}
    channel = SmtpEmail(f"smtp://127.0.0.1:{port}", clock, timeout=10, pool_size=1)
    delivery = make_delivery(db, clock, channel)
    jobs = jobs_for(db, clock, 10)
    assert asyncio.run(send_all(delivery, jobs)) == [None] * 10
    # Each message exactly once: the dead connection was found by RSET (or before DATA) and
    # replaced before anything was sent on it.
    assert len(server.messages) == 10 and len(set(server.ids())) == 10
    assert channel.connections_opened == 3
    assert set(statuses(db, jobs)) == {"sent"}
    channel.close()


def test_a_drop_during_data_resends_only_that_message(
    db: Database, clock: VirtualClock, relay: tuple[int, Relay]
) -> None:
    port, server = relay
    server.drop_before_reply = {4}
    channel = SmtpEmail(f"smtp://127.0.0.1:{port}", clock, timeout=10, pool_size=1)
    delivery = make_delivery(db, clock, channel)
    jobs = jobs_for(db, clock, 10)
    outcomes = asyncio.run(send_all(delivery, jobs))
    uncertain = [j for j, o in zip(jobs, outcomes, strict=True) if o is not None]
    assert len(uncertain) == 1 and all(
        isinstance(o, SendUncertain) for o in outcomes if o is not None
    )
    assert len(server.messages) == 10  # the server has all ten, one answer was lost
    assert sorted(statuses(db, jobs)) == ["sending"] + ["sent"] * 9
    # Every job runs again (as after a crash of the whole batch): the nine recorded as sent
    # are not sent again; the uncertain one is, with the same Message-ID.
    again = [Job(j.key, j.payload, attempt=2) for j in jobs]
    assert asyncio.run(send_all(delivery, again)) == [None] * 10
    assert len(server.messages) == 11
    ids = server.ids()
    assert len(set(ids)) == 10 and ids[-1] == ids[3]
    with db.read() as conn:
        row = message_store.get_by_key(conn, uncertain[0].key)
    assert row is not None and row["status"] == "sent"
    assert row["settled"] == "resent_same_message_id"
    channel.close()
