"""Product recommendations per contact, vectorised over the order lines (polars). Pure.

Scenario by the contact's ``value`` segment: VIP and Standard get **cross-sell** (co-purchase
neighbours of what they bought, scored by normalised co-occurrence), At Risk gets **rebuy**
(their own products not bought lately, most-bought first), Churn and contacts without purchases
get **win-back** (recent best sellers). Whatever a scenario cannot fill is topped up with best
sellers, so a mailing never goes out with fewer items than asked because of thin data (the
prototype's cross-sell simply failed under two products). Products bought in the last
``rebuy_exclusion_days`` are never suggested.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import polars as pl
from pydantic import BaseModel, ConfigDict, Field

CROSS_SELL = "cross-sell"
REBUY = "rebuy"
WINBACK = "win-back"
SCENARIO_BY_SEGMENT = {
    "VIP": CROSS_SELL,
    "Standard": CROSS_SELL,
    "At Risk": REBUY,
    "Churn": WINBACK,
}

LINES_SCHEMA = pl.Schema(
    {
        "contact_id": pl.Int64(),
        "order_id": pl.Int64(),
        "product_key": pl.String(),
        "ordered_at": pl.Datetime("us", "UTC"),
    }
)
OUT_SCHEMA = pl.Schema(
    {
        "contact_id": pl.Int64(),
        "rank": pl.Int64(),
        "product_key": pl.String(),
        "scenario": pl.String(),
        "reason": pl.String(),
        "score": pl.Float64(),
    }
)


class RecommendationSettings(BaseModel):
    """The ``recommendations:`` section of the automation folder."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    n: int = Field(3, ge=1, le=20)
    rebuy_exclusion_days: int = Field(60, ge=0)
    winback_window_days: int = Field(90, ge=1)
    silence_days: int = Field(135, ge=0)
    neighbours: int = Field(10, ge=1, le=100, description="co-purchase neighbours kept per product")
    min_co_orders: int = Field(2, ge=1, description="orders two products must share to pair")
    model_ttl_seconds: int = Field(
        300, ge=0, description="how long the API reuses the co-purchase model (per process)"
    )


@dataclass(frozen=True)
class Model:
    """What every contact's recommendations are computed against."""

    pairs: pl.DataFrame  # product_key, other_key, co_orders, similarity (top neighbours only)
    best_sellers: pl.DataFrame  # product_key, orders, rank
    best_window_days: int | None  # None: all time (nothing sold inside the window)


def scenario_for(segment: str | None, rfm: dict[str, Any] | None) -> str:
    """The segment decides; without one (segments not computed yet) the SPEC's ``value`` rule is
    applied to the RFM figures directly, and a contact without purchases gets best sellers."""
    if segment in SCENARIO_BY_SEGMENT:
        return SCENARIO_BY_SEGMENT[segment]
    if not rfm or not rfm.get("frequency"):
        return WINBACK
    recency = rfm.get("recency_days")
    if recency is not None and recency > 180 and rfm.get("frequency") == 1:
        return WINBACK
    score = float(rfm.get("score") or 0)
    return REBUY if score <= 1.5 else CROSS_SELL


def scenario_column(
    segment: pl.Expr, frequency: pl.Expr, recency_days: pl.Expr, score: pl.Expr
) -> pl.Expr:
    """``scenario_for`` as an expression, for a whole campaign's contacts at once."""
    by_segment = segment.replace_strict(SCENARIO_BY_SEGMENT, default=None, return_dtype=pl.String)
    return (
        pl.when(by_segment.is_not_null())
        .then(by_segment)
        .when(frequency.fill_null(0) == 0)
        .then(pl.lit(WINBACK))
        .when((recency_days > 180) & (frequency == 1))
        .then(pl.lit(WINBACK))
        .when(score.fill_null(0) <= 1.5)
        .then(pl.lit(REBUY))
        .otherwise(pl.lit(CROSS_SELL))
    )


def _order_products(lines: pl.DataFrame) -> pl.DataFrame:
    return lines.select("order_id", "product_key").unique()


def build_model(
    lines: pl.DataFrame,
    now: datetime,
    settings: RecommendationSettings,
    inactive: list[str] | None = None,
) -> Model:
    """Co-purchase neighbours and best sellers from every order line."""
    baskets = _order_products(lines)
    if inactive:
        baskets = baskets.filter(~pl.col("product_key").is_in(inactive))
    counts = baskets.group_by("product_key").agg(pl.len().alias("n"))
    pairs = (
        baskets.join(baskets.rename({"product_key": "other_key"}), on="order_id")
        .filter(pl.col("product_key") != pl.col("other_key"))
        .group_by("product_key", "other_key")
        .agg(pl.len().alias("co_orders"))
        .filter(pl.col("co_orders") >= settings.min_co_orders)
        .join(counts, on="product_key")
        .join(counts.rename({"product_key": "other_key", "n": "n_other"}), on="other_key")
        # Cosine-normalised co-occurrence: raw counts would always point at the best seller.
        .with_columns(
            (pl.col("co_orders") / (pl.col("n") * pl.col("n_other")).sqrt()).alias("similarity")
        )
        .sort(
            ["product_key", "similarity", "co_orders", "other_key"],
            descending=[False, True, True, False],
        )
        .group_by("product_key", maintain_order=True)
        .head(settings.neighbours)
        .select("product_key", "other_key", "co_orders", "similarity")
    )
    since = now - timedelta(days=settings.winback_window_days)
    recent = lines.filter(pl.col("ordered_at") >= since)
    window: int | None = settings.winback_window_days
    if inactive:
        recent = recent.filter(~pl.col("product_key").is_in(inactive))
    if recent.height == 0:
        recent, window = lines, None
        if inactive:
            recent = recent.filter(~pl.col("product_key").is_in(inactive))
    best = (
        _order_products(recent)
        .group_by("product_key")
        .agg(pl.len().alias("orders"))
        .sort(["orders", "product_key"], descending=[True, False])
        .head(50 + settings.n)
        .with_row_index("rank", offset=1)
        .with_columns(pl.col("rank").cast(pl.Int64))
    )
    return Model(pairs=pairs, best_sellers=best, best_window_days=window)


def _history(lines: pl.DataFrame) -> pl.DataFrame:
    return lines.group_by("contact_id", "product_key").agg(
        pl.col("order_id").n_unique().alias("orders"),
        pl.col("ordered_at").max().alias("last_at"),
    )


def _rebuy(history: pl.DataFrame, contacts: pl.Series, cutoff: datetime) -> pl.DataFrame:
    return (
        history.filter(
            pl.col("contact_id").is_in(contacts.implode()) & (pl.col("last_at") < cutoff)
        )
        .sort(
            ["contact_id", "orders", "last_at", "product_key"],
            descending=[False, True, True, False],
        )
        .select(
            "contact_id",
            "product_key",
            pl.lit(REBUY).alias("scenario"),
            pl.format(
                "bought {} time(s), last on {}", "orders", pl.col("last_at").dt.strftime("%Y-%m-%d")
            ).alias("reason"),
            pl.col("orders").cast(pl.Float64).alias("score"),
        )
    )


def _cross_sell(
    history: pl.DataFrame, contacts: pl.Series, model: Model, names: pl.DataFrame | None
) -> pl.DataFrame:
    owned = history.filter(pl.col("contact_id").is_in(contacts.implode())).select(
        "contact_id", "product_key"
    )
    return (
        owned.join(model.pairs, on="product_key")
        .join(
            owned.rename({"product_key": "other_key"}),
            on=["contact_id", "other_key"],
            how="anti",
        )
        .group_by("contact_id", "other_key")
        .agg(
            pl.col("similarity").sum().alias("score"),
            pl.col("product_key").sort_by("similarity").last().alias("via"),
        )
        .sort(["contact_id", "score", "other_key"], descending=[False, True, False])
        .pipe(_label, names)
        .select(
            "contact_id",
            pl.col("other_key").alias("product_key"),
            pl.lit(CROSS_SELL).alias("scenario"),
            pl.format("often bought with {}", "via").alias("reason"),
            pl.col("score").round(4),
        )
    )


def _label(frame: pl.DataFrame, names: pl.DataFrame | None) -> pl.DataFrame:
    """Say "often bought with <product name>" when the catalogue knows the name."""
    if names is None:
        return frame
    known = names.select(pl.col("product_key").alias("via"), pl.col("name").alias("via_name"))
    return frame.join(known, on="via", how="left", maintain_order="left").with_columns(
        pl.coalesce("via_name", "via").alias("via")
    )


def _best_sellers(contacts: pl.DataFrame, model: Model) -> pl.DataFrame:
    span = (
        f"in the last {model.best_window_days} days"
        if model.best_window_days is not None
        else "of all time"
    )
    return (
        contacts.select("contact_id")
        .join(model.best_sellers, how="cross")
        .select(
            "contact_id",
            "product_key",
            pl.lit(WINBACK).alias("scenario"),
            pl.format(
                "best seller: {} {} " + span,
                "orders",
                pl.when(pl.col("orders") == 1).then(pl.lit("order")).otherwise(pl.lit("orders")),
            ).alias("reason"),
            pl.col("orders").cast(pl.Float64).alias("score"),
            pl.col("rank").alias("pos"),
        )
    )


def recommend(
    model: Model,
    lines: pl.DataFrame,
    scenarios: pl.DataFrame,
    now: datetime,
    settings: RecommendationSettings,
    n: int | None = None,
    names: pl.DataFrame | None = None,
) -> pl.DataFrame:
    """``scenarios`` (``contact_id, scenario``) in; up to ``n`` ranked items per contact out.

    ``lines`` are the order lines of (at least) those contacts; ``names`` (``product_key,
    name``) only makes the reasons readable. Output columns: ``contact_id,
    rank, product_key, scenario, reason, score``; contacts with nothing to suggest are absent.

    One pass for any number of contacts: each scenario's own list (already ranked, distinct
    products), cut to ``n``; then best sellers only for the contacts still short, minus what
    they bought lately, already own (cross-sell) or were just offered.
    """
    n = n or settings.n
    if scenarios.height == 0:
        return pl.DataFrame(schema=OUT_SCHEMA)
    ids = scenarios.get_column("contact_id").implode()
    history = _history(lines.filter(pl.col("contact_id").is_in(ids)))
    cutoff = now - timedelta(days=settings.rebuy_exclusion_days)

    def of(name: str) -> pl.Series:
        return scenarios.filter(pl.col("scenario") == name).get_column("contact_id")

    primary = (
        pl.concat(
            [
                _rebuy(history, of(REBUY), cutoff),
                _cross_sell(history, of(CROSS_SELL), model, names),
            ],
            how="vertical_relaxed",
        )
        .group_by("contact_id", maintain_order=True)
        .head(n)
        .with_columns(
            pl.lit(0).alias("tier"),
            pl.int_range(pl.len()).over("contact_id").cast(pl.Int64).alias("pos"),
        )
    )
    short = (
        scenarios.join(primary.group_by("contact_id").len(), on="contact_id", how="left")
        .with_columns((n - pl.col("len").fill_null(0)).alias("missing"))
        .filter(pl.col("missing") > 0)
    )
    parts = [primary]
    if short.height:
        wanted = short.get_column("contact_id").implode()
        owned_too = short.filter(pl.col("scenario") == CROSS_SELL).get_column("contact_id")
        excluded = pl.concat(
            [
                history.filter(
                    pl.col("contact_id").is_in(wanted) & (pl.col("last_at") >= cutoff)
                ).select("contact_id", "product_key"),
                # Cross-sell means something new: its top-up must not offer what they have.
                history.filter(pl.col("contact_id").is_in(owned_too.implode())).select(
                    "contact_id", "product_key"
                ),
                primary.filter(pl.col("contact_id").is_in(wanted)).select(
                    "contact_id", "product_key"
                ),
            ]
        )
        top_up = (
            _best_sellers(short, model)
            .join(excluded, on=["contact_id", "product_key"], how="anti", maintain_order="left")
            .join(short.select("contact_id", "missing"), on="contact_id")
            .filter(pl.int_range(pl.len()).over("contact_id") < pl.col("missing"))
            .drop("missing")
            .with_columns(pl.lit(1).alias("tier"))
            .select(primary.columns)
        )
        parts.append(top_up)
    return (
        pl.concat(parts, how="vertical_relaxed")
        .sort(["contact_id", "tier", "pos"])
        .with_columns(pl.int_range(1, pl.len() + 1).over("contact_id").cast(pl.Int64).alias("rank"))
        .select(list(OUT_SCHEMA))
        .cast(OUT_SCHEMA)
    )
