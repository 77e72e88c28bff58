"""Segmentations (SPEC §5): named, ordered ``(value, condition)`` lists; first match wins.

A segmentation whose own ``if`` is false (e.g. ``value`` for a contact without purchases) gives
no value at all. A value condition that fails at run time counts as not matching and is
reported, like a rule condition.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from nurture.rules.book import Segmentation
from nurture.rules.expr import ExprError, Scope


@dataclass(frozen=True, slots=True)
class SegmentError:
    segmentation: str
    value: str | None  # None: the segmentation's own ``if``
    message: str


@dataclass
class Assignment:
    values: dict[str, str | None] = field(default_factory=dict)
    errors: list[SegmentError] = field(default_factory=list)


def assign(
    segmentations: Sequence[Segmentation], contact: Mapping[str, Any], now: datetime
) -> Assignment:
    """The value of each segmentation for ``contact`` (a ``ContactState.view()``)."""
    out = Assignment()
    current = dict(contact.get("segments") or {})
    view = dict(contact)
    view["segments"] = current
    scope = Scope({"contact": view, "now": now})
    for seg in segmentations:
        chosen: str | None = None
        applicable = True
        if seg.condition is not None:
            try:
                applicable = seg.condition.test(scope)
            except ExprError as exc:
                out.errors.append(SegmentError(seg.id, None, str(exc)))
                applicable = False
        if applicable:
            for candidate in seg.values:
                if candidate.condition is None:
                    chosen = candidate.value
                    break
                try:
                    if candidate.condition.test(scope):
                        chosen = candidate.value
                        break
                except ExprError as exc:
                    out.errors.append(SegmentError(seg.id, candidate.value, str(exc)))
        out.values[seg.id] = chosen
        if current.get(seg.id) != chosen:
            # Later segmentations may read this one: rebind the contact only when it moved.
            if chosen is None:
                del current[seg.id]
            else:
                current[seg.id] = chosen
            scope.set("contact", view)
    return out


def changes(before: Mapping[str, str], after: Mapping[str, str]) -> list[dict[str, Any]]:
    """``segment.changed`` payloads, one per segmentation whose value moved."""
    out = []
    for name in sorted(set(before) | set(after)):
        if before.get(name) != after.get(name):
            out.append({"segmentation": name, "from": before.get(name), "to": after.get(name)})
    return out


def contact_fields(seg: Segmentation) -> frozenset[str] | None:
    """The top-level contact fields a segmentation's conditions can read (``None``: any)."""
    out: set[str] = set()
    for expr in (seg.condition, *(v.condition for v in seg.values)):
        if expr is None or "contact" not in expr.names:
            continue
        fields = expr.fields.get("contact")
        if fields is None:
            return None
        out |= fields
    return frozenset(out)
