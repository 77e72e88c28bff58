"""``/console/sequences``: every sequence with its enrollments, and per sequence a funnel
(enrolled -> each step sent -> opened -> clicked -> booked/purchased -> exited) with counts
and rates, split by the segment that routes its e-mails (the segmentation its step templates
name, e.g. ``assessment``: CRITICAL / URGENT / OPTIMIZE), drawn as SVG and given as a table.
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, Depends, Request
from starlette.responses import Response

from nurture.accounts.sessions import Session
from nurture.sequences.models import Sequence
from nurture.storage import enrollments as store
from nurture.web.console.charts_funnel import Stage, funnel, rate
from nurture.web.console.render import render
from nurture.web.console.security import viewer
from nurture.web.console.snapshot import Snapshot
from nurture.web.rules import automation
from nurture.web.sequences import _service as sequence_service
from nurture.web.state import web_state

router = APIRouter(prefix="/console", include_in_schema=False)
NAV = ("Sequences", "/console/sequences")

_SEGMENT_REF = re.compile(r"contact\.segments(?:\.([A-Za-z_]\w*)|\[\s*['\"]([^'\"]+)['\"]\s*\])")
# Exits that are the sequence's goal rather than a drop-out (``exit_on`` events).
CONVERSIONS = {"event booking.created": "booked", "event purchase.completed": "purchased"}
NONE = ""
FUNNEL_MAX_AGE = 60.0
# How long a first view waits for the first count before saying it is counting.
FIRST_WAIT = 1.0


def routing_segmentation(seq: Sequence) -> str | None:
    """The segmentation the sequence's template names read (``contact.segments.X``)."""
    for step in seq.spec.steps:
        found = _SEGMENT_REF.search(step.send_email)
        if found:
            return found.group(1) or found.group(2)
    return None


def _segments(request: Request, segmentation: str | None, seen: set[str]) -> list[tuple[str, str]]:
    """``[(key, label)]``: the segmentation's declared values first, in order, then any other
    value found, then contacts in none of them."""
    if segmentation is None:
        return [(NONE, "all")]
    declared = [
        v.value
        for s in automation(request).segmentations
        if s.id == segmentation
        for v in s.spec.values
    ]
    keys = declared + sorted(seen - set(declared) - {NONE})
    out = [(k, k) for k in keys]
    if NONE in seen:
        out.append((NONE, "no segment"))
    return out


@dataclass(frozen=True)
class Counts:
    """What the funnel reads from the database, for one sequence."""

    enrollments: list[tuple[str, str, str, int]]
    steps: list[tuple[str, str, str, int]]
    engagement: list[tuple[str, int, int]]


def _snapshot(request: Request, seq: Sequence) -> Snapshot[Counts]:
    """One snapshot per sequence and app: counting a big sequence's steps and messages takes
    seconds, so it is done in the background at most every ``FUNNEL_MAX_AGE``."""
    state = web_state(request)
    key = f"__console_funnel__:{seq.id}"
    found = state.sources.get(key)
    if found is None:
        db = state.container.db
        segmentation = routing_segmentation(seq)

        def compute() -> Counts:
            with db.read() as conn:
                return Counts(
                    store.funnel_enrollments(conn, seq.id, segmentation),
                    store.funnel_steps(conn, seq.id, segmentation),
                    store.funnel_engagement(conn, seq.id, segmentation),
                )

        found = Snapshot(compute, FUNNEL_MAX_AGE, state.container.clock.now)
        state.sources[key] = found
    assert isinstance(found, Snapshot)
    return found


def build_funnel(request: Request, seq: Sequence, counts: Counts) -> dict[str, Any]:
    segmentation = routing_segmentation(seq)
    enrolled: dict[str, int] = defaultdict(int)
    converted: dict[str, int] = defaultdict(int)
    exited: dict[str, int] = defaultdict(int)
    by_status: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    reasons: dict[str, int] = defaultdict(int)
    for segment, status, reason, n in counts.enrollments:
        enrolled[segment] += n
        by_status[status][segment] += n
        if status == "exited" and reason in CONVERSIONS:
            converted[segment] += n
        elif status == "exited":
            exited[segment] += n
        if status != "active":
            reasons[f"{status}: {reason}" if reason else status] += n
    steps: dict[str, dict[str, dict[str, int]]] = defaultdict(lambda: defaultdict(dict))
    for segment, step_id, status, n in counts.steps:
        steps[step_id][status][segment] = n
    opened = {s: o for s, o, _ in counts.engagement}
    clicked = {s: c for s, _, c in counts.engagement}
    stages = [Stage("enrolled", dict(enrolled))]
    stages += [Stage(f"{st.id} sent", dict(steps[st.id].get("sent", {}))) for st in seq.steps]
    stages += [
        Stage("opened", opened),
        Stage("clicked", clicked),
        Stage("booked / purchased", dict(converted)),
        Stage("exited", dict(exited)),
    ]
    segments = _segments(request, segmentation, set(enrolled))
    table = [
        {
            "label": stage.label,
            "total": stage.total,
            "rate": rate(stage.total, stages[0].total),
            "cells": [
                (stage.counts.get(key, 0), rate(stage.counts.get(key, 0), enrolled.get(key, 0)))
                for key, _ in segments
            ],
        }
        for stage in stages
    ]
    step_table = [
        {
            "step": st.id,
            "template": st.spec.send_email,
            "at": st.spec.at,
            "counts": {s: sum(steps[st.id].get(s, {}).values()) for s in store.STEP_STATUSES},
        }
        for st in seq.steps
    ]
    return {
        "segmentation": segmentation,
        "segments": segments,
        "chart": funnel(stages, segments, title=f"Funnel of {seq.id}"),
        "table": table,
        "steps": step_table,
        "statuses": {k: sum(v.values()) for k, v in by_status.items()},
        "reasons": sorted(reasons.items(), key=lambda kv: -kv[1]),
        "enrolled": stages[0].total,
    }


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
    return render(
        request,
        session,
        "sequence.html",
        title=f"Sequence {seq.id}",
        seq=seq,
        f=build_funnel(request, seq, counts) if counts is not None else None,
        counted_at=counted_at,
        refresh=2 if counts is None else 0,
    )
