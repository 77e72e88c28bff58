"""RFM: recency, frequency, monetary per contact, and their 1-4 scores. Pure, vectorised (polars).

The prototype binned with ``pd.qcut``-style quartile edges, which raise as soon as two edges are
equal (many one-time buyers) and on a single customer. Here every score comes from a rank:

    percentile(x) = (share of customers strictly below x) + 1/2 (share equal to x)
    score        = clamp(ceil(4 x percentile), 1, 4)

Ties therefore always share a score, a single customer or an all-equal column scores 2 (the
middle, rounded down), and a missing value scores 1 (nothing is known in its favour). Recency is
ranked reversed: fewer days since the last order is better. Fixed bands from the ``scoring.rfm``
configuration replace the ranking per dimension.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import polars as pl
from pydantic import BaseModel, ConfigDict, field_validator

DIMENSIONS = ("recency_days", "frequency", "monetary")
SCORE_OF = {"recency_days": "r", "frequency": "f", "monetary": "m"}
# Baselines keep every value up to this many customers, evenly spaced order statistics beyond.
BASELINE_POINTS = 2001

ORDERS_SCHEMA = pl.Schema(
    {
        "contact_id": pl.Int64(),
        "order_id": pl.Int64(),
        "ordered_at": pl.Datetime("us", "UTC"),
        "net_amount": pl.Float64(),
    }
)


class RfmBands(BaseModel):
    """Fixed cut points, three ascending upper bounds (inclusive) per dimension.

    ``recency_days: [30, 90, 180]`` gives 4 up to 30 days, 3 up to 90, 2 up to 180, else 1;
    ``frequency: [1, 3, 6]`` gives 1 for one order, 2 for 2-3, 3 for 4-6, 4 beyond. A dimension
    left out is scored by rank-based quartiles.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    recency_days: tuple[float, float, float] | None = None
    frequency: tuple[float, float, float] | None = None
    monetary: tuple[float, float, float] | None = None

    @field_validator("recency_days", "frequency", "monetary")
    @classmethod
    def _ascending(
        cls, value: tuple[float, float, float] | None
    ) -> tuple[float, float, float] | None:
        if value is not None and not (value[0] < value[1] < value[2]):
            raise ValueError("cut points must be strictly ascending")
        return value

    def for_dimension(self, dimension: str) -> tuple[float, float, float] | None:
        cuts: tuple[float, float, float] | None = getattr(self, dimension)
        return cuts


def orders_frame(rows: Sequence[tuple[Any, ...]] | None = None) -> pl.DataFrame:
    """An empty (or literal) orders frame with the columns ``summarize`` expects."""
    return pl.DataFrame(rows or [], schema=ORDERS_SCHEMA, orient="row")


def summarize(orders: pl.DataFrame, now: datetime) -> pl.DataFrame:
    """Orders (or order lines) in, one row per contact out.

    Input columns: ``contact_id``, ``order_id``, ``ordered_at`` (UTC, may be null),
    ``net_amount`` (may be null). Lines of one order share its ``order_id``, so frequency counts
    orders, not lines. Output: ``contact_id, last_order_at, recency_days, frequency, monetary``.
    """
    day_us = 86_400 * 1_000_000
    now_lit = pl.lit(now).cast(pl.Datetime("us", "UTC"))
    return (
        orders.group_by("contact_id")
        .agg(
            pl.col("ordered_at").max().alias("last_order_at"),
            pl.col("order_id").drop_nulls().n_unique().cast(pl.Int64).alias("frequency"),
            # All amounts unknown is a missing value (scored 1), not a zero spend.
            pl.when(pl.col("net_amount").count() > 0)
            .then(pl.col("net_amount").sum().round(2))
            .otherwise(None)
            .alias("monetary"),
        )
        .with_columns(
            ((now_lit - pl.col("last_order_at")).dt.total_microseconds() // day_us)
            .clip(lower_bound=0)
            .cast(pl.Int64)
            .alias("recency_days")
        )
        .select("contact_id", "last_order_at", "recency_days", "frequency", "monetary")
        .sort("contact_id")
    )


def summarize_one(
    contact_id: int,
    orders: Sequence[tuple[int | None, datetime | None, float | None]],
    now: datetime,
) -> dict[str, Any] | None:
    """``summarize`` for one contact's ``(order_id, ordered_at, net_amount)`` rows, in plain
    Python: the same row ``summarize(...).row(0, named=True)`` gives (a hypothesis test holds
    them equal), without polars' fixed cost per frame. ``None`` without orders."""
    if not orders:
        return None
    times = [at for _, at, _ in orders if at is not None]
    amounts = [amount for _, _, amount in orders if amount is not None]
    last = max(times) if times else None
    recency = None
    if last is not None:
        elapsed = now - last
        days = (elapsed.days * 86_400 + elapsed.seconds) * 1_000_000 + elapsed.microseconds
        recency = max(days // (86_400 * 1_000_000), 0)
    return {
        "contact_id": contact_id,
        "last_order_at": last,
        "recency_days": recency,
        "frequency": len({order_id for order_id, _, _ in orders if order_id is not None}),
        # Amounts carry at most two decimals, so the float sum's error is far below the
        # rounding step and Python's rounding agrees with polars'.
        "monetary": round(math.fsum(amounts), 2) if amounts else None,
    }


def _rank_score(column: str, *, reverse: bool) -> pl.Expr:
    value = -pl.col(column) if reverse else pl.col(column)
    lo = value.rank("min")
    hi = value.rank("max")
    n = pl.col(column).count()
    percentile = (lo + hi - 1).cast(pl.Float64) / (2 * n)
    return (percentile * 4).ceil().clip(1, 4).cast(pl.Int8)


def _band_score(column: str, cuts: tuple[float, float, float], *, reverse: bool) -> pl.Expr:
    value = pl.col(column)
    low_to_high = (
        pl.when(value <= cuts[0])
        .then(1)
        .when(value <= cuts[1])
        .then(2)
        .when(value <= cuts[2])
        .then(3)
        .otherwise(4)
    )
    expr = (5 - low_to_high) if reverse else low_to_high
    return pl.when(value.is_null()).then(None).otherwise(expr).cast(pl.Int8)


def score(summary: pl.DataFrame, bands: RfmBands | None = None) -> pl.DataFrame:
    """Add ``r``, ``f``, ``m`` (1-4) and ``score`` (their mean, 2 decimals) to a summary."""
    bands = bands or RfmBands()
    exprs = []
    for dimension in DIMENSIONS:
        reverse = dimension == "recency_days"
        cuts = bands.for_dimension(dimension)
        expr = (
            _band_score(dimension, cuts, reverse=reverse)
            if cuts is not None
            else _rank_score(dimension, reverse=reverse)
        )
        exprs.append(expr.fill_null(1).alias(SCORE_OF[dimension]))
    out = summary.with_columns(exprs)
    mean = (pl.col("r").cast(pl.Float64) + pl.col("f") + pl.col("m")) / 3
    return out.with_columns(mean.round(2).alias("score"))


def baseline(summary: pl.DataFrame) -> dict[str, Any]:
    """The sorted values of each dimension (sampled for large bases), for ``score_one``."""
    out: dict[str, Any] = {"contacts": summary.height}
    for dimension in DIMENSIONS:
        values = summary.get_column(dimension).drop_nulls().sort()
        if values.len() > BASELINE_POINTS:
            last = values.len() - 1
            idx = [round(i * last / (BASELINE_POINTS - 1)) for i in range(BASELINE_POINTS)]
            values = values.gather(idx)
        out[dimension] = values.to_list()
    return out


def _percentile(sorted_values: Sequence[float], x: float) -> float | None:
    n = len(sorted_values)
    if n == 0:
        return None
    below = bisect.bisect_left(sorted_values, x)
    equal = bisect.bisect_right(sorted_values, x) - below
    return (below + equal / 2) / n


def _one(x: float | None, dimension: str, dist: dict[str, Any], bands: RfmBands) -> int:
    if x is None:
        return 1
    reverse = dimension == "recency_days"
    cuts = bands.for_dimension(dimension)
    if cuts is not None:
        band = 1 + sum(x > c for c in cuts)
        return 5 - band if reverse else band
    p = _percentile(dist.get(dimension) or [], x)
    if p is None:
        p = 0.5  # nothing to compare with: the single-customer case
    elif reverse:
        p = 1 - p
    return min(4, max(1, math.ceil(4 * p)))


def score_one(
    values: dict[str, Any], distribution: dict[str, Any], bands: RfmBands | None = None
) -> dict[str, Any]:
    """Score one contact's figures against a stored baseline (the incremental path)."""
    bands = bands or RfmBands()
    scores = {SCORE_OF[d]: _one(values.get(d), d, distribution, bands) for d in DIMENSIONS}
    return {**scores, "score": round((scores["r"] + scores["f"] + scores["m"]) / 3, 2)}


def records(scored: pl.DataFrame) -> pl.DataFrame:
    """``contact_id`` and the JSON document stored on the contact, built column-wise."""
    doc = pl.struct(
        pl.col("recency_days"),
        pl.col("frequency"),
        pl.col("monetary"),
        pl.col("r").cast(pl.Int64),
        pl.col("f").cast(pl.Int64),
        pl.col("m").cast(pl.Int64),
        pl.col("score"),
        pl.col("last_order_at").dt.strftime("%Y-%m-%dT%H:%M:%SZ").alias("last_order_at"),
    )
    return scored.select("contact_id", doc.struct.json_encode().alias("rfm"))


def document(row: dict[str, Any]) -> dict[str, Any]:
    """The stored form of one scored row (the incremental path; mirrors ``records``)."""
    last = row.get("last_order_at")
    return {
        "recency_days": row.get("recency_days"),
        "frequency": row.get("frequency"),
        "monetary": row.get("monetary"),
        "r": row["r"],
        "f": row["f"],
        "m": row["m"],
        "score": row["score"],
        "last_order_at": last.strftime("%Y-%m-%dT%H:%M:%SZ") if last is not None else None,
    }
