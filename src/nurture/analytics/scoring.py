"""The lead score of SPEC §4, as a pure function with its breakdown.

    score      = clamp(profile + engagement, min, max)
    profile    = base + rfm_weight * rfm_score + min(w * engagement_events, cap)
                 + min(w * purchases, cap) - recency penalty
    engagement = sum of rule ``score`` deltas, optionally decayed with a half-life

The defaults reproduce the prototype's ``ScoreCalculator``: the rfm term is truncated to an
integer, and the recency penalty follows its code (0 up to 30 days or no purchase, 5 up to 90,
15 up to 180, 30 beyond), not its contradictory documents.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from nurture.core.scoring import ScoringSpec


@dataclass(frozen=True, slots=True)
class ScoreInputs:
    rfm_score: float = 0.0
    engagement_events: int = 0
    purchases: int = 0
    days_since_purchase: int | None = None  # None: never purchased
    engagement: float = 0.0  # the (possibly decayed) sum of rule deltas


@dataclass(frozen=True, slots=True)
class ScoreBreakdown:
    base: int
    rfm: int
    engagement_events: int
    purchases: int
    recency_penalty: int
    engagement: int
    profile: int
    raw: int  # profile + engagement, unclamped
    total: int  # clamped: what a contact shows

    def as_dict(self) -> dict[str, int]:
        # Spelled out: dataclasses.asdict deep-copies field by field, and this runs per event.
        return {
            "base": self.base,
            "rfm": self.rfm,
            "engagement_events": self.engagement_events,
            "purchases": self.purchases,
            "recency_penalty": self.recency_penalty,
            "engagement": self.engagement,
            "profile": self.profile,
            "raw": self.raw,
            "total": self.total,
        }


def recency_penalty(spec: ScoringSpec, days: int | None) -> int:
    if days is None:
        return 0
    for band in spec.recency_bands:
        if days <= band.up_to:
            return band.penalty
    return spec.recency_beyond


def _truncate(value: float) -> int:
    # int() truncates like the prototype; the rounding first keeps 0.7 * 10 from becoming 6.
    return math.trunc(round(value, 9))


def compute(spec: ScoringSpec, inputs: ScoreInputs) -> ScoreBreakdown:
    rfm_score = min(max(inputs.rfm_score, 0.0), spec.rfm_max)
    rfm = _truncate(spec.rfm_weight * rfm_score)
    events = min(
        spec.engagement_event_weight * max(inputs.engagement_events, 0), spec.engagement_event_cap
    )
    purchases = min(spec.purchase_weight * max(inputs.purchases, 0), spec.purchase_cap)
    penalty = recency_penalty(spec, inputs.days_since_purchase)
    profile = spec.base + rfm + events + purchases - penalty
    engagement = _truncate(inputs.engagement)
    raw = profile + engagement
    return ScoreBreakdown(
        base=spec.base,
        rfm=rfm,
        engagement_events=events,
        purchases=purchases,
        recency_penalty=penalty,
        engagement=engagement,
        profile=profile,
        raw=raw,
        total=min(max(raw, spec.min), spec.max),
    )


def decayed(value: float, since: datetime | None, now: datetime, spec: ScoringSpec) -> float:
    """The engagement sum decayed by the configured half-life from ``since`` to ``now``."""
    if spec.half_life is None or since is None or now <= since:
        return value
    elapsed = (now - since) / spec.half_life
    return float(value * 0.5**elapsed)


def _number(value: Any, default: float = 0.0) -> float:
    if isinstance(value, bool):
        return default
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return default
    return default


def parse_time(value: Any) -> datetime | None:
    if isinstance(value, datetime):
        return value
    if isinstance(value, str) and value:
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return None
        return parsed if parsed.tzinfo is not None else None
    return None


def inputs_for(
    spec: ScoringSpec, rfm: dict[str, Any] | None, engagement: dict[str, Any], now: datetime
) -> ScoreInputs:
    """Score inputs from a contact's stored ``rfm`` and ``engagement`` figures at ``now``."""
    rfm = rfm or {}
    last_order = parse_time(rfm.get("last_order_at"))
    days = None
    if last_order is not None:
        days = max((now - last_order).days, 0)
    elif rfm.get("recency_days") is not None:
        days = int(_number(rfm.get("recency_days")))
    total = _number(engagement.get("decayed", engagement.get("sum")))
    return ScoreInputs(
        rfm_score=_number(rfm.get("score")),
        engagement_events=int(_number(engagement.get("events"))),
        purchases=int(_number(rfm.get("frequency"))),
        days_since_purchase=days,
        engagement=decayed(total, parse_time(engagement.get("decayed_at")), now, spec),
    )


def crossings(before: int, after: int, thresholds: list[int]) -> list[tuple[int, str]]:
    """``(threshold, "up"|"down")`` for each threshold the score passed going from before to after.

    Up means from below to at-or-above; down the reverse. Staying on one side fires nothing, so
    a crossing fires once per pass however many events keep the score above the line.
    """
    out = []
    for threshold in sorted(thresholds):
        if before < threshold <= after:
            out.append((threshold, "up"))
        elif after < threshold <= before:
            out.append((threshold, "down"))
    return out
