"""Running processes: the worker loop, the API server, and both in one process (``nurture up``)."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
import sys
import threading
from collections.abc import Coroutine, Iterator, Sequence
from typing import Any

import uvicorn

from nurture.bootstrap import Container
from nurture.database import notify
from nurture.intake.process import EventProcessor
from nurture.jobs.worker import WorkerLoop

log = logging.getLogger("nurture.runtime")


class Waker:
    """Thread-safe nudge: ingest calls ``notify`` after a commit, the worker wakes at once."""

    def __init__(self) -> None:
        self._event: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pending = threading.Event()

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._event = asyncio.Event()
        if self._pending.is_set():
            self._event.set()

    def notify(self) -> None:
        self._pending.set()
        if self._loop is not None and self._event is not None:
            # RuntimeError: the loop closed while another thread was committing.
            with contextlib.suppress(RuntimeError):
                self._loop.call_soon_threadsafe(self._event.set)

    async def wait(self, timeout: float) -> None:
        assert self._event is not None
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._event.wait(), timeout)
        self._event.clear()
        self._pending.clear()


class Worker:
    def __init__(
        self,
        container: Container,
        processor: EventProcessor,
        waker: Waker,
        extra_loops: list[WorkerLoop] | None = None,
    ) -> None:
        self.container = container
        self.processor = processor
        self.waker = waker
        self.extra_loops = extra_loops or []

    async def _events(self, stop: asyncio.Event) -> None:
        poll = self.container.settings.worker_poll_seconds
        while not stop.is_set():
            try:
                result = await asyncio.to_thread(self.processor.run_once)
            except Exception:
                log.exception("event batch failed", extra={"action": "worker.batch_error"})
                await self.waker.wait(poll)
                continue
            if result.total:
                log.info(
                    "events processed",
                    extra={
                        "action": "worker.batch",
                        "processed": result.processed,
                        "retried": result.retried,
                        "failed": result.failed,
                    },
                )
            else:
                await self.waker.wait(poll)

    async def run(self, stop: asyncio.Event) -> None:
        self.waker.bind(asyncio.get_running_loop())
        helpers = [asyncio.create_task(self._wake_on_stop(stop))]
        # New events wake the processor at once instead of at the next poll: written by another
        # process (`nurture serve`) they arrive as NOTIFY on PostgreSQL; on SQLite only this
        # process can write them (ingest in `nurture up`, job handlers), through the commit hook.
        db = self.container.db
        remove_hook = None
        if db.is_sqlite:
            remove_hook = notify.on_commit(db.engine, notify.EVENTS, self.waker.notify)
        else:
            handlers = {notify.EVENTS: lambda _payload: self.waker.notify()}
            helpers.append(asyncio.create_task(notify.listen(db, handlers, stop)))
        try:
            await asyncio.gather(self._events(stop), *(loop(stop) for loop in self.extra_loops))
        finally:
            for task in helpers:
                task.cancel()
            await asyncio.gather(*helpers, return_exceptions=True)
            if remove_hook is not None:
                remove_hook()

    async def _wake_on_stop(self, stop: asyncio.Event) -> None:
        await stop.wait()
        self.waker.notify()


class _Server(uvicorn.Server):
    """uvicorn re-raises SIGTERM after its shutdown, so the process would die by the signal;
    nurture handles the signals itself so a drained shutdown exits 0."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def install_stop_signals(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)


def run(main: Coroutine[Any, Any, None]) -> None:
    """``asyncio.run`` on uvloop when it is installed (``uvicorn[standard]`` brings it).

    uvicorn picks uvloop only when it creates the loop itself; ``serve`` runs inside nurture's
    loop (beside the worker, for ``up``), so the choice is made here. uvloop's loop and transports
    cost markedly less per request than asyncio's (see bench/ingest.py --loop asyncio).
    """
    try:
        import uvloop
    except ImportError:
        asyncio.run(main)
        return
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(main)


def proxy_options(trusted_proxies: Sequence[str]) -> dict[str, Any]:
    """uvicorn's own ``ProxyHeadersMiddleware``, for the configured proxies only.

    uvicorn's default believes X-Forwarded-For from 127.0.0.1 (or ``$FORWARDED_ALLOW_IPS``);
    nurture believes nobody unless ``NURTURE_TRUSTED_PROXIES`` names the proxy, so a client
    cannot choose the address its requests are recorded, allowlisted and audited under. Behind
    a trusted proxy the client is the right-most address in X-Forwarded-For that is not itself
    a trusted proxy, and X-Forwarded-Proto sets the scheme.
    """
    if not trusted_proxies:
        return {"proxy_headers": False, "forwarded_allow_ips": []}
    return {"proxy_headers": True, "forwarded_allow_ips": list(trusted_proxies)}


def server_config(
    app: object,
    host: str,
    port: int,
    *,
    trusted_proxies: Sequence[str] = (),
    grace_seconds: int | None = None,
) -> uvicorn.Config:
    return uvicorn.Config(
        app,  # type: ignore[arg-type]
        host=host,
        port=port,
        log_config=None,
        access_log=False,
        lifespan="on",
        server_header=False,
        timeout_graceful_shutdown=grace_seconds,
        **proxy_options(trusted_proxies),
    )


async def serve(
    app: object,
    host: str,
    port: int,
    worker: Worker | None = None,
    *,
    trusted_proxies: Sequence[str] = (),
    grace_seconds: int | None = None,
) -> None:
    """Serve HTTP (and, for ``up``, run the worker in the same event loop) until SIGTERM/SIGINT.

    On a stop signal uvicorn stops accepting, closes idle keep-alive connections and lets
    in-flight requests finish (each is answered only once its events are committed) for up to
    ``grace_seconds``; then the app's shutdown waits for the ingest commits still running, and
    the worker finishes its current batch and hands back or finishes its jobs.
    """
    config = server_config(
        app, host, port, trusted_proxies=trusted_proxies, grace_seconds=grace_seconds
    )
    # The ingest writer thread and the event loop hand work to each other on every request; at
    # the default 5 ms GIL switch interval each hand-off can wait a full interval.
    sys.setswitchinterval(0.0002)
    # What start-up built (modules, the app, the automation pack) lives as long as the process.
    # Frozen out of the cyclic collector, it is not walked again by every full collection,
    # which took 100+ ms (a p99 outlier of the intake, bench/ingest.py) and could free none of it.
    gc.collect()
    gc.freeze()
    server = _Server(config)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()

    def _shutdown() -> None:
        server.should_exit = True

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, _shutdown)
    tasks = [asyncio.create_task(server.serve())]
    if worker is not None:
        tasks.append(asyncio.create_task(worker.run(stop)))
    await tasks[0]
    stop.set()
    await asyncio.gather(*tasks[1:])


async def work(worker: Worker) -> None:
    stop = asyncio.Event()
    install_stop_signals(stop)
    await worker.run(stop)
