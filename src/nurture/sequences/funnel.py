"""A sequence's funnel: enrolled -> each step sent -> opened -> clicked -> booked/purchased ->
exited, with counts and rates, split by the segment that routes its e-mails (the segmentation
its step templates name, e.g. ``contact.segments.assessment``: CRITICAL / URGENT / OPTIMIZE).

Enrollments come from ``enrollments``, sent steps from ``enrollment_steps``, opened and clicked
from ``messages`` (an enrollment counts once however many of its e-mails were opened).
Booked / purchased are enrollments that left on ``booking.created`` or ``purchase.completed``;
exited are the other exits. The split is by the contact's current value of the segmentation.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Sequence as Seq
from dataclasses import dataclass
from typing import Any

from nurture.database.engine import Database
from nurture.sequences.models import Sequence
from nurture.storage import enrollments as store

_SEGMENT_REF = re.compile(r"contact\.segments(?:\.([A-Za-z_]\w*)|\[\s*['\"]([^'\"]+)['\"]\s*\])")
# Exits that are the sequence's goal rather than a drop-out (``exit_on`` events).
CONVERSIONS = {"event booking.created": "booked", "event purchase.completed": "purchased"}
NONE = ""  # contacts in none of the segmentation's values (or every contact: no split)


def routing_segmentation(seq: Sequence) -> str | None:
    """The segmentation the sequence's template names read (``contact.segments.X``)."""
    for step in seq.spec.steps:
        found = _SEGMENT_REF.search(step.send_email)
        if found:
            return found.group(1) or found.group(2)
    return None


@dataclass(frozen=True)
class Counts:
    """What the funnel reads from the database, for one sequence."""

    enrollments: list[tuple[str, str, str, int]]
    steps: list[tuple[str, str, str, int]]
    engagement: list[tuple[str, int, int]]


def count(db: Database, seq: Sequence) -> Counts:
    segmentation = routing_segmentation(seq)
    with db.read() as conn:
        return Counts(
            store.funnel_enrollments(conn, seq.id, segmentation),
            store.funnel_steps(conn, seq.id, segmentation),
            store.funnel_engagement(conn, seq.id, segmentation),
        )


@dataclass(frozen=True)
class Stage:
    label: str
    counts: dict[str, int]  # segment -> n

    @property
    def total(self) -> int:
        return sum(self.counts.values())


def rate(n: int, of: int) -> str:
    return f"{n / of * 100:.0f} %" if of else "-"


def _segments(
    segmentation: str | None, declared: Seq[str], seen: set[str]
) -> list[tuple[str, str]]:
    """``[(key, label)]``: the declared values first, in order, then any other value found,
    then contacts in none of them."""
    if segmentation is None:
        return [(NONE, "all")]
    keys = list(declared) + sorted(seen - set(declared) - {NONE})
    out = [(k, k) for k in keys]
    if NONE in seen:
        out.append((NONE, "no segment"))
    return out


def build(seq: Sequence, counts: Counts, declared: Seq[str]) -> dict[str, Any]:
    """The stages, the segments in order (``declared``: the segmentation's values) and the
    tables the console shows."""
    enrolled: dict[str, int] = defaultdict(int)
    converted: dict[str, int] = defaultdict(int)
    exited: dict[str, int] = defaultdict(int)
    reasons: dict[str, int] = defaultdict(int)
    for segment, status, reason, n in counts.enrollments:
        enrolled[segment] += n
        if status == "exited" and reason in CONVERSIONS:
            converted[segment] += n
        elif status == "exited":
            exited[segment] += n
        if status != "active":
            reasons[f"{status}: {reason}" if reason else status] += n
    steps: dict[str, dict[str, dict[str, int]]] = defaultdict(lambda: defaultdict(dict))
    for segment, step_id, status, n in counts.steps:
        steps[step_id][status][segment] = n
    stages = [Stage("enrolled", dict(enrolled))]
    stages += [Stage(f"{st.id} sent", dict(steps[st.id].get("sent", {}))) for st in seq.steps]
    stages += [
        Stage("opened", {s: o for s, o, _ in counts.engagement}),
        Stage("clicked", {s: c for s, _, c in counts.engagement}),
        Stage("booked / purchased", dict(converted)),
        Stage("exited", dict(exited)),
    ]
    segmentation = routing_segmentation(seq)
    segments = _segments(segmentation, declared, set(enrolled))
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
            "counts": {s: sum(steps[st.id].get(s, {}).values()) for s in store.STEP_STATUSES},
        }
        for st in seq.steps
    ]
    return {
        "segmentation": segmentation,
        "segments": segments,
        "stages": stages,
        "table": table,
        "steps": step_table,
        "reasons": sorted(reasons.items(), key=lambda kv: -kv[1]),
        "enrolled": stages[0].total,
    }
