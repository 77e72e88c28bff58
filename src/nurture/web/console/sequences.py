"""``/console/sequences``: every sequence with its enrollments, and per sequence its funnel
(``sequences.funnel``), drawn as SVG and given as a table. Counting a big sequence's steps and
messages takes seconds: it is done in the background at most every ``FUNNEL_MAX_AGE``."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from starlette.responses import Response

from nurture.accounts.sessions import Session
from nurture.sequences import funnel
from nurture.sequences.models import Sequence
from nurture.storage import enrollments as store
from nurture.web.console.charts_funnel import draw
from nurture.web.console.render import render
from nurture.web.console.security import viewer
from nurture.web.console.snapshot import Snapshot
from nurture.web.rules import automation
from nurture.web.sequences import _service as sequence_service
from nurture.web.state import web_state

router = APIRouter(prefix="/console", include_in_schema=False)
NAV = ("Sequences", "/console/sequences")

FUNNEL_MAX_AGE = 60.0
# How long a first view waits for the first count before saying it is counting.
FIRST_WAIT = 1.0


def _snapshot(request: Request, seq: Sequence) -> Snapshot[funnel.Counts]:
    """One snapshot per sequence and app (see ``snapshot``)."""
    state = web_state(request)
    key = f"__console_funnel__:{seq.id}"
    found = state.sources.get(key)
    if found is None:
        db = state.container.db
        found = Snapshot(lambda: funnel.count(db, seq), FUNNEL_MAX_AGE, state.container.clock.now)
        state.sources[key] = found
    assert isinstance(found, Snapshot)
    return found


@router.get("/sequences")
def sequences_page(request: Request, session: Session = Depends(viewer)) -> Response:
    service = sequence_service(request)
    with web_state(request).container.db.read() as conn:
        counts = store.status_counts(conn)
    rows = [
        {
            "id": seq.id,
            "description": seq.spec.description,
            "enabled": seq.spec.enabled,
            "steps": len(seq.steps),
            "enroll_on": seq.spec.enroll_on,
            "counts": counts.get(seq.id, {}),
        }
        for seq in service.book.sequences
    ]
    return render(request, session, "sequences.html", title="Sequences", rows=rows)


@router.get("/sequences/{sequence_id}")
def sequence_page(
    request: Request, sequence_id: str, session: Session = Depends(viewer)
) -> Response:
    seq = sequence_service(request).sequence(sequence_id)
    snapshot = _snapshot(request, seq)
    counts, counted_at = snapshot.get()
    if counts is None:
        # A small sequence is counted at once; a big one says it is counting and reloads.
        snapshot.wait(FIRST_WAIT)
        counts, counted_at = snapshot.get()
    f = None
    if counts is not None:
        name = funnel.routing_segmentation(seq)
        declared = [
            v.value
            for s in automation(request).segmentations
            if s.id == name
            for v in s.spec.values
        ]
        f = funnel.build(seq, counts, declared)
        f["chart"] = draw(f["stages"], f["segments"], title=f"Funnel of {seq.id}")
    return render(
        request,
        session,
        "sequence.html",
        title=f"Sequence {seq.id}",
        seq=seq,
        f=f,
        counted_at=counted_at,
        refresh=2 if counts is None else 0,
    )
