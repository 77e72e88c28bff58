"""Hypothesis over random orders of signups, bookings, reschedules, cancellations, unsubscribes
and purchases, interleaved with time: never a step sent twice, never a step sent after its
enrollment ended, never two live enrollments for one key.

Events go straight into the inbox (the webhook routes are covered by the e2e tests); the real
processor, sequences step, job worker and delivery service run on a virtual clock, and the
recording channel counts what a provider would really have received. SQLite only: each example
needs a fresh database, and PostgreSQL runs of the same code are in the e2e tests.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from nurture.bootstrap import build_container, build_processor
from nurture.clock import VirtualClock
from nurture.config import Settings
from nurture.core.events import ContactRef, InboundEvent
from nurture.intake.ingest import build_rows
from nurture.jobs import HandlerRegistry, JobWorker
from nurture.pack import DEFAULTS_DIR
from nurture.schema.tables import enrollments, messages
from nurture.sequences import register as register_sequences
from nurture.storage import events as event_store
from nurture.storage import jobs as job_store
from nurture.testing import RecordingEmail
from tests.conftest import START, fresh_sqlite_url
from tests.helpers import make_delivery

EMAIL = "ann@example.com"
ACTIONS = st.sampled_from(
    [
        "signup",
        "book-1",
        "book-1-soon",
        "cancel-1",
        "move-1-2",
        "move-2-3",
        "cancel-2",
        "book-2",
        "unsubscribe",
        "purchase",
        "wait-1h",
        "wait-1d",
        "wait-3d",
    ]
)


def event_for(action: str, now: Any) -> InboundEvent | None:
    contact = ContactRef(email=EMAIL, traits={"first_name": "Ann", "time_zone": "Europe/Paris"})
    start = now + timedelta(days=4)
    data: dict[str, Any]
    if action == "signup":
        kind, data = "form.submitted", {"form": "christmas-assessment", "red_systems": 1}
    elif action.startswith("book-"):
        uid = "bk_" + action.split("-")[1]
        when = now + timedelta(hours=3) if action.endswith("soon") else start
        kind, data = "booking.created", {"booking_uid": uid, "start_time": when.isoformat()}
    elif action.startswith("cancel-"):
        kind, data = "booking.cancelled", {"booking_uid": "bk_" + action[-1]}
    elif action.startswith("move-"):
        _, old, new = action.split("-")
        data = {
            "booking_uid": f"bk_{new}",
            "previous_booking_uid": f"bk_{old}",
            "start_time": (start + timedelta(days=int(new))).isoformat(),
        }
        kind = "booking.rescheduled"
    elif action == "unsubscribe":
        kind, data = "email.unsubscribed", {}
    elif action == "purchase":
        kind, data = "purchase.completed", {"order_id": uuid.uuid4().hex, "amount": 20.0}
    else:
        return None
    return InboundEvent("test", kind, uuid.uuid4().hex, contact, data, now)


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(actions=st.lists(ACTIONS, min_size=1, max_size=12))
def test_random_event_orders_never_send_twice_or_after_exit(
    actions: list[str], sqlite_template: Path, tmp_path: Path
) -> None:
    asyncio.run(_play(actions, fresh_sqlite_url(sqlite_template, tmp_path)))


async def _play(actions: list[str], url: str) -> None:
    clock = VirtualClock(START)
    container = build_container(
        Settings(database_url=url, automation_dir=DEFAULTS_DIR), clock=clock
    )
    try:
        channel = RecordingEmail()
        delivery = make_delivery(container.db, clock, channel)
        registry = HandlerRegistry()
        registry.register("send_email", delivery.send_email)
        register_sequences(
            registry,
            container.db,
            clock,
            delivery,
            automation_dir=container.settings.automation_dir,
            time_scale=container.settings.time_scale,
            partitions=container.settings.partitions,
        )
        worker = JobWorker(container, registry, worker_id="prop")
        processor = build_processor(container)

        async def settle(until: Any) -> None:
            while True:
                processor.drain()
                await worker.drain()
                processor.drain()
                with container.db.read() as conn:
                    nxt = job_store.next_run_at(conn, registry.kinds)
                if nxt is None or nxt > until:
                    break
                clock.set(max(nxt, clock.now()))
            clock.set(max(until, clock.now()))

        for action in actions:
            event = event_for(action, clock.now())
            if event is not None:
                rows = build_rows([event], None, None, clock.now(), container.settings.partitions)
                with container.db.begin() as conn:
                    event_store.insert_new(conn, rows)
                await settle(clock.now())
            else:
                step = {"wait-1h": 1, "wait-1d": 24, "wait-3d": 72}[action]
                await settle(clock.now() + timedelta(hours=step))
        await settle(clock.now() + timedelta(days=20))

        with container.db.read() as conn:
            enrolled = [dict(r) for r in conn.execute(select(enrollments)).mappings()]
            sent = [
                dict(r)
                for r in conn.execute(
                    select(messages).where(messages.c.enrollment_id.is_not(None))
                ).mappings()
            ]
        # Never a step sent twice: one provider call per message key, one message per step.
        keys = [m.key for m in channel.sent if m.key.startswith("seq:")]
        assert len(keys) == len(set(keys)), keys
        steps = [(m["enrollment_id"], m["step_id"]) for m in sent if m["status"] == "sent"]
        assert len(steps) == len(set(steps))
        assert len(steps) == len(keys)
        # Never a step sent after its enrollment ended (exit, cancel).
        ended = {e["id"]: e["ended_at"] for e in enrolled if e["status"] in ("exited", "cancelled")}
        for m in sent:
            if m["status"] == "sent" and m["enrollment_id"] in ended:
                assert m["sent_at"] <= ended[m["enrollment_id"]], (m, enrolled)
        # Never two live enrollments for one key; nothing left live once the sequences ran out.
        live = [(e["sequence_id"], e["key"]) for e in enrolled if e["status"] == "active"]
        assert len(live) == len(set(live))
        assert not [e for e in enrolled if e["status"] == "active"]
    finally:
        container.close()
