"""Group concurrent calls into one batch: the per-e-mail costs paid once per batch.

The job worker runs many ``send_email`` attempts at once (``NURTURE_JOB_CONCURRENCY``); each
calls ``Delivery.send_email`` for its own job. A ``Coalescer`` collects the calls that arrive
within ``linger`` seconds (or until ``max_size``) and runs them as one batch, so a batch of e-mails
costs one read, one claim commit, one provider batch request and one completion commit instead
of one of each per e-mail. Every caller still gets its own outcome (``None`` or its exception),
so the job's retry policy sees exactly what it saw before.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

T = TypeVar("T")
log = logging.getLogger("nurture.deliver")

# The batch function: one outcome per item, in order (``None``: done).
RunBatch = Callable[[list[T]], Awaitable[Sequence[BaseException | None]]]


class Coalescer(Generic[T]):
    def __init__(self, run: RunBatch[T], *, max_size: int, linger: float) -> None:
        self.run = run
        self.max_size = max(1, max_size)
        self.linger = linger
        self._pending: list[tuple[T, asyncio.Future[None]]] = []
        self._timer: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        # Batches in flight keep running when their callers are cancelled (a worker's grace
        # period ran out): their bookkeeping still lands, and the jobs find it on their retry.
        self._running: set[asyncio.Task[None]] = set()

    async def submit(self, item: T) -> None:
        """Run ``item`` in the next batch; raise its own error, if it has one."""
        loop = asyncio.get_running_loop()
        if loop is not self._loop:
            # A new event loop (``asyncio.run`` again, in tests and one-off commands): what was
            # pending belonged to the old one, whose callers and timer are gone with it.
            self._loop, self._timer, self._pending = loop, None, []
        future: asyncio.Future[None] = loop.create_future()
        self._pending.append((item, future))
        if len(self._pending) >= self.max_size:
            self._flush()
        elif self._timer is None:
            self._timer = loop.call_later(self.linger, self._flush)
        await future

    def _flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        batch, self._pending = self._pending, []
        if not batch:
            return
        task = asyncio.get_running_loop().create_task(self._run(batch))
        self._running.add(task)
        task.add_done_callback(self._running.discard)

    async def _run(self, batch: list[tuple[T, asyncio.Future[None]]]) -> None:
        try:
            outcomes = await self.run([item for item, _ in batch])
        except BaseException as exc:
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            if not isinstance(exc, Exception):
                raise
            return
        for (_, future), outcome in zip(batch, outcomes, strict=True):
            if future.done():  # its caller was cancelled
                continue
            if outcome is None:
                future.set_result(None)
            else:
                future.set_exception(outcome)

    async def wait_idle(self) -> None:
        """Until every batch started so far has finished (tests, shutdown)."""
        if self._running:
            await asyncio.gather(*self._running, return_exceptions=True)
