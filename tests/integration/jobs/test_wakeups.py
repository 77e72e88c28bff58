"""Wake-ups: work committed by another writer reaches a sleeping worker as a notification.

On PostgreSQL the writer may be another process (`nurture serve` beside `nurture worker`):
``LISTEN/NOTIFY`` carries due jobs and new events. On SQLite the writer shares the process
(`nurture up`) and a commit hook carries them. Nothing here measures time: the assertions are
that a notification arrives (and what it says), with bounds that only stop a broken run.
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from nurture.bootstrap import build_container, build_processor
from nurture.clock import SystemClock
from nurture.config import Settings
from nurture.core.events import ContactRef, InboundEvent
from nurture.database import notify
from nurture.database.engine import Database
from nurture.intake.ingest import Ingestor
from nurture.runtime import Waker, Worker
from nurture.storage import events as event_store

ROOT = Path(__file__).resolve().parents[2]
BOUND = 60.0  # seconds; only a broken wake-up gets near it

# The "API process": what `nurture serve` does when a webhook arrives, in its own interpreter.
API_PROCESS = """
import sys
from datetime import UTC, datetime, timedelta

from nurture.clock import SystemClock
from nurture.core.events import ContactRef, InboundEvent
from nurture.jobs import enqueue
from nurture.intake.ingest import Ingestor
from nurture.database.engine import Database

db = Database(sys.argv[1])
now = datetime.now(UTC)
with db.begin() as conn:  # far in the future: a worker finds it without being woken
    enqueue(conn, kind="work", key="far", run_at=now + timedelta(days=3), payload={}, now=now)
try:
    with db.begin() as conn:  # rolled back: NOTIFY is transactional, nothing is announced
        enqueue(conn, kind="work", key="lost", run_at=now, payload={}, now=now)
        raise RuntimeError("the contact update failed")
except RuntimeError:
    pass
with db.begin() as conn:
    ref = enqueue(conn, kind="work", key="due", run_at=now, payload={}, now=now)
ingest = Ingestor(db, SystemClock(), partitions=8)
ingest.store([InboundEvent("track", "page.viewed", "ev-1", ContactRef(email="a@b.co"), {})])
ingest.close()
db.dispose()
print(ref.run_at.isoformat(), flush=True)
"""


@pytest.mark.postgres
def test_another_process_wakes_listeners_for_due_jobs_and_new_events(pg_url: str) -> None:
    db = Database(pg_url)
    received: list[tuple[str, str | None]] = []

    async def scenario() -> str:
        arrived = asyncio.Event()
        listening = asyncio.Event()

        def handler(channel: str) -> Callable[[str | None], None]:
            def on_message(payload: str | None) -> None:
                received.append((channel, payload))
                if payload is None:
                    listening.set()
                elif {c for c, p in received if p is not None} == {notify.JOBS, notify.EVENTS}:
                    arrived.set()

            return on_message

        stop = asyncio.Event()
        handlers = {notify.JOBS: handler(notify.JOBS), notify.EVENTS: handler(notify.EVENTS)}
        listener = asyncio.create_task(notify.listen(db, handlers, stop))
        try:
            await asyncio.wait_for(listening.wait(), BOUND)
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-c",
                API_PROCESS,
                pg_url,
                stdout=asyncio.subprocess.PIPE,
                env={**os.environ, "PYTHONPATH": str(ROOT / "src")},
            )
            out, _ = await asyncio.wait_for(proc.communicate(), BOUND)
            assert proc.returncode == 0
            await asyncio.wait_for(arrived.wait(), BOUND)
        finally:
            stop.set()
            listener.cancel()
            await asyncio.gather(listener, return_exceptions=True)
        return out.decode().strip()

    try:
        due_run_at = asyncio.run(scenario())
    finally:
        db.dispose()
    jobs = [p for c, p in received if c == notify.JOBS and p is not None]
    events = [p for c, p in received if c == notify.EVENTS and p is not None]
    # Notifications arrive in commit order: had the far-future or the rolled-back enqueue
    # announced itself, it would come first. The due job's announcement carries its run_at.
    assert jobs[0] == due_run_at
    assert events[0] == ""


def test_worker_event_loop_wakes_on_events_committed_in_its_process(
    make_settings: Callable[..., Settings],
) -> None:
    """`nurture up`: ingest and worker share the engine (the only way on SQLite)."""
    check_event_loop_wakes(make_settings(worker_poll_seconds=3600), separate_writer=False)


@pytest.mark.postgres
def test_worker_event_loop_wakes_on_events_from_another_session(pg_url: str) -> None:
    """`nurture serve` beside `nurture worker`: the event arrives through NOTIFY."""
    check_event_loop_wakes(
        Settings(database_url=pg_url, worker_poll_seconds=3600), separate_writer=True
    )


def check_event_loop_wakes(settings: Settings, *, separate_writer: bool) -> None:
    """A worker polling once an hour processes an event as soon as it is committed."""
    c = build_container(settings, clock=SystemClock())
    writer_db = Database(settings.database_url) if separate_writer else c.db
    ingest = Ingestor(writer_db, SystemClock(), partitions=8)
    notified: list[int] = []

    class RecordingWaker(Waker):
        def notify(self) -> None:
            notified.append(1)
            super().notify()

    def status(event_id: int) -> str:
        with c.db.read() as conn:
            row = event_store.get(conn, event_id)
        assert row is not None
        return str(row["status"])

    async def scenario() -> int:
        waker = RecordingWaker()
        worker = Worker(c, build_processor(c), waker)
        stop = asyncio.Event()
        task = asyncio.create_task(worker.run(stop))
        try:
            if not c.db.is_sqlite:  # the listener announces itself once LISTEN is in place
                for _ in range(int(BOUND * 20)):
                    if notified:
                        break
                    await asyncio.sleep(0.05)
                assert notified, "the event listener never connected"
            await asyncio.sleep(0.2)  # let the first (empty) batch run: the loop sleeps an hour
            before = len(notified)
            event = InboundEvent("track", "page.viewed", "w-1", ContactRef(email="a@b.co"), {})
            [event_id] = (await asyncio.to_thread(ingest.store, [event])).accepted
            for _ in range(int(BOUND * 20)):
                woken = len(notified) > before
                if woken and await asyncio.to_thread(status, event_id) != "pending":
                    break
                await asyncio.sleep(0.05)
            assert len(notified) > before, "no notification reached the worker"
            return event_id
        finally:
            stop.set()
            await asyncio.wait_for(task, BOUND)

    try:
        event_id = asyncio.run(scenario())
        assert status(event_id) == "processed"
    finally:
        ingest.close()
        if writer_db is not c.db:
            writer_db.dispose()
        c.close()
