"""``POST /api/v1/events``: canonical events from servers holding an API key (Power Automate,
Zapier, n8n, scripts), and ``?wait=true`` to get back what processing decided.

The body is the ``/webhooks/track`` shape (one event or an array). Events are stored through
the same durable ingestor first; with ``wait=true`` the request then drives the event processor
itself (in a thread, so the event loop keeps serving) until its events are processed, and
answers with the rules that fired and the jobs they scheduled, including those of the derived
events processing caused (``derived``: ``score.crossed`` -> the VIP offer) when they are
processed within the limit. When the events themselves take longer than
``NURTURE_API_WAIT_SECONDS`` the answer is ``202`` with the event ids: the event is stored and a
worker finishes it; ``GET /api/v1/events/{id}/outcome`` reads the result later.
"""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import Future
from typing import Any

import orjson
from fastapi import APIRouter, Depends, Query, Request
from starlette.responses import Response

from nurture.bootstrap import build_processor
from nurture.errors import FieldProblem, InvalidFields, NotFound
from nurture.intake.process import EventProcessor
from nurture.intake.results import descendants, event_outcome
from nurture.providers.track.inbound import items_of, load_json, parse_canonical
from nurture.storage import events as event_store
from nurture.web.auth import require_api_key
from nurture.web.body import read_limited, require_media_type
from nurture.web.state import WebState, client_addr, web_state

SOURCE = "api"
JSON = "application/json"
# When another worker holds the event's partition, look again this soon.
POLL_SECONDS = 0.02
_FINAL = ("processed", "failed")

router = APIRouter(prefix="/api/v1", dependencies=[Depends(require_api_key)], tags=["events"])
_processor_lock = threading.Lock()


def _processor(state: WebState) -> EventProcessor:
    """One processor per app, built on first use (it compiles the automation folder)."""
    found = state.sources.get("__events_api_processor__")
    if found is None:
        with _processor_lock:
            found = state.sources.get("__events_api_processor__")
            if found is None:
                found = build_processor(state.container)
                state.sources["__events_api_processor__"] = found
    assert isinstance(found, EventProcessor)
    return found


def parse_events(raw: bytes, max_events: int) -> list[Any]:
    items, many = items_of(load_json(raw), max_events)
    problems: list[FieldProblem] = []
    out = []
    for index, item in enumerate(items):
        event = parse_canonical(item, f"[{index}]." if many else "", SOURCE, problems)
        if event is not None:
            out.append(event)
    if problems:
        raise InvalidFields(problems)
    return out


def _unfinished(state: WebState, event_ids: list[int]) -> list[int]:
    with state.container.db.read() as conn:
        rows = {i: event_store.get(conn, i) for i in event_ids}
    return [i for i, row in rows.items() if row is not None and row["status"] not in _FINAL]


def _unfinished_derived(state: WebState, event_ids: list[int]) -> list[int]:
    """Derived events caused by ``event_ids`` still waiting for their first processing (one
    that failed and waits for a retry is not waited for: its backoff outlasts any request)."""
    waiting: list[int] = []
    with state.container.db.read() as conn:
        for event_id in event_ids:
            row = event_store.get(conn, event_id)
            if row is None:
                continue
            waiting += [
                d["id"]
                for d in descendants(conn, event_id, row["contact_id"])
                if d["status"] not in _FINAL and d["attempts"] == 0
            ]
    return waiting


def drive(state: WebState, event_ids: list[int], deadline: float) -> bool:
    """Process until every event is final or ``deadline`` (monotonic) passes; True when done.

    Then, while time remains, process the derived events they caused (``score.crossed`` from a
    purchase, and the rules that fire on it), so the answer includes those decisions too; one
    still pending at the deadline is reported as ``pending`` in ``derived``.

    Processing takes batches of due events, others' included: an event is only ever processed
    in its partition's order, and a partition another worker holds is simply waited for.
    """
    processor = _processor(state)
    pending = _unfinished(state, event_ids)
    while pending:
        if time.monotonic() >= deadline:
            return False
        result = processor.run_once()
        pending = _unfinished(state, pending)
        if pending and result.total == 0:
            time.sleep(POLL_SECONDS)
    while _unfinished_derived(state, event_ids) and time.monotonic() < deadline:
        if processor.run_once().total == 0:
            time.sleep(POLL_SECONDS)
    return True


def _threads(state: WebState) -> set[threading.Thread]:
    threads = state.sources.setdefault("__events_api_threads__", set())
    assert isinstance(threads, set)
    return threads


def _start(state: WebState, event_ids: list[int], deadline: float) -> Future[bool]:
    """Run ``drive`` in its own thread, tracked so shutdown (and tests) can wait for it."""
    future: Future[bool] = Future()
    threads = _threads(state)

    def run() -> None:
        try:
            future.set_result(drive(state, event_ids, deadline))
        except BaseException as exc:
            future.set_exception(exc)
        finally:
            threads.discard(threading.current_thread())

    thread = threading.Thread(target=run, name="events-api-wait", daemon=True)
    threads.add(thread)
    thread.start()
    return future


def join_background(state: WebState, timeout: float = 30.0) -> None:
    """Wait for ``wait=true`` processing still running after its request answered 202."""
    for thread in list(_threads(state)):
        thread.join(timeout)


def _json(body: dict[str, Any], status: int) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type=JSON)


def outcomes(state: WebState, event_ids: list[int]) -> list[dict[str, Any]]:
    with state.container.db.read() as conn:
        found = [event_outcome(conn, i) for i in event_ids]
    return [o for o in found if o is not None]


@router.post("/events", status_code=202)
async def post_events(
    request: Request,
    wait: bool = Query(False, description="Process now and answer with the decisions taken"),
) -> Response:
    state = web_state(request)
    settings = state.container.settings
    raw = await read_limited(request, settings.max_body_bytes)
    ctype = require_media_type(request, JSON)
    events = parse_events(raw, settings.max_batch_events)
    outcome = await state.ingestor.submit(events, raw, ctype, client_addr(request))
    event_ids = outcome.accepted + outcome.duplicates
    if not wait:
        return _json(outcome.body(), outcome.status_code)
    limit = settings.api_wait_seconds
    deadline = time.monotonic() + limit
    work = asyncio.wrap_future(_start(state, event_ids, deadline))
    try:
        # The thread stops itself at the deadline; the shield keeps a slow batch from being
        # abandoned half-way if this request gives up first.
        done = await asyncio.wait_for(asyncio.shield(work), timeout=limit + 1.0)
    except TimeoutError:
        # Still busy past the limit, maybe with derived events only: the answer depends on
        # the events posted, which may well be final already.
        done = not await asyncio.to_thread(_unfinished, state, event_ids)
    if not done:
        body = outcome.body()
        body["status"] = "accepted"
        body["detail"] = (
            f"processing takes longer than {limit:g}s; the events are stored and will be "
            "processed; GET /api/v1/events/{id}/outcome reads the result"
        )
        return _json(body, 202)
    results = await asyncio.to_thread(outcomes, state, event_ids)
    failed = any(r["status"] == "failed" for r in results)
    return _json(
        {"status": "failed" if failed else "processed", "event_ids": event_ids, "results": results},
        200,
    )


@router.get("/events/{event_id}/outcome")
def get_outcome(request: Request, event_id: int) -> Response:
    """The decisions and scheduled actions of one event (``status`` says if it is done)."""
    found = outcomes(web_state(request), [event_id])
    if not found:
        raise NotFound(f"no event {event_id}")
    return _json(found[0], 200)
