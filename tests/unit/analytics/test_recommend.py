"""Recommendations on a small hand-made basket set with known answers (analytics/recommend.py)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import polars as pl

from nurture.analytics import recommend as reco

NOW = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)
SETTINGS = reco.RecommendationSettings(min_co_orders=1)

# (contact, order, days ago, products)
BASKETS = [
    (1, 1, 200, "AB"),
    (2, 2, 190, "AB"),
    (3, 3, 180, "AC"),
    (4, 4, 170, "BC"),
    (5, 5, 10, "D"),
    (6, 6, 20, "DE"),
    (7, 7, 30, "D"),
    # contact 9: A twice long ago, B once, C ten days ago (too recent to suggest again)
    (9, 8, 200, "A"),
    (9, 9, 150, "A"),
    (9, 10, 100, "B"),
    (9, 11, 10, "C"),
]


def lines() -> pl.DataFrame:
    rows = [(c, o, p, NOW - timedelta(days=d)) for c, o, d, products in BASKETS for p in products]
    return pl.DataFrame(rows, schema=reco.LINES_SCHEMA, orient="row")


def run(
    scenarios: dict[int, str], settings: reco.RecommendationSettings = SETTINGS
) -> dict[int, list[tuple[str, str, str]]]:
    data = lines()
    model = reco.build_model(data, NOW, settings)
    frame = reco.recommend(
        model,
        data,
        pl.DataFrame(
            {"contact_id": list(scenarios), "scenario": list(scenarios.values())},
            schema={"contact_id": pl.Int64(), "scenario": pl.String()},
        ),
        NOW,
        settings,
        names=pl.DataFrame({"product_key": ["A"], "name": ["Alsace Riesling"]}),
    )
    out: dict[int, list[tuple[str, str, str]]] = {}
    for row in frame.sort("contact_id", "rank").iter_rows(named=True):
        out.setdefault(row["contact_id"], []).append(
            (row["product_key"], row["scenario"], row["reason"])
        )
    return out


def test_model_pairs_are_cosine_normalised() -> None:
    model = reco.build_model(lines(), NOW, SETTINGS)
    pairs = {
        (r["product_key"], r["other_key"]): round(r["similarity"], 3)
        for r in model.pairs.iter_rows(named=True)
    }
    # A in 5 orders, B in 4, C in 3, D in 3, E in 1; A+B together in 2 orders
    assert pairs[("A", "B")] == round(2 / (5 * 4) ** 0.5, 3)
    assert pairs[("D", "E")] == round(1 / (3 * 1) ** 0.5, 3)
    assert ("A", "D") not in pairs
    # best sellers of the last 90 days, by orders: D (3), then C and E (1 each, by key)
    assert model.best_sellers.get_column("product_key").to_list() == ["D", "C", "E"]


def test_cross_sell_suggests_co_purchase_neighbours_then_best_sellers() -> None:
    got = run({3: reco.CROSS_SELL})[3]
    # contact 3 owns A and C; B is bought with both; then the recent best sellers
    assert [g[0] for g in got] == ["B", "D", "E"]
    assert got[0][1] == "cross-sell" and got[0][2] == "often bought with Alsace Riesling"
    assert got[1][1] == "win-back" and got[1][2] == "best seller: 3 orders in the last 90 days"


def test_rebuy_ranks_own_products_by_frequency_and_skips_recent_ones() -> None:
    got = run({9: reco.REBUY})[9]
    assert [g[0] for g in got] == ["A", "B", "D"]
    assert got[0][2].startswith("bought 2 time(s), last on ")
    assert "C" not in [g[0] for g in got]  # bought 10 days ago


def test_winback_is_recent_best_sellers_minus_recent_purchases() -> None:
    got = run({1: reco.WINBACK, 5: reco.WINBACK})
    assert [g[0] for g in got[1]] == ["D", "C", "E"]
    assert [g[0] for g in got[5]] == ["C", "E"]  # D was bought 10 days ago; nothing else sold
    assert got[1][0][2] == "best seller: 3 orders in the last 90 days"
    assert got[5][0][2] == "best seller: 1 order in the last 90 days"


def test_n_and_min_co_orders_are_configurable() -> None:
    strict = reco.RecommendationSettings(min_co_orders=2, n=1)
    got = run({3: reco.CROSS_SELL, 4: reco.CROSS_SELL}, strict)
    # only A+B reaches 2 shared orders; contact 4 (B, C) is offered A through B
    assert got[3] == [("B", "cross-sell", "often bought with Alsace Riesling")]
    assert got[4] == [("A", "cross-sell", "often bought with B")]


def test_scenario_follows_the_value_segment_or_the_rfm_rule() -> None:
    assert reco.scenario_for("VIP", None) == reco.CROSS_SELL
    assert reco.scenario_for("Standard", None) == reco.CROSS_SELL
    assert reco.scenario_for("At Risk", None) == reco.REBUY
    assert reco.scenario_for("Churn", None) == reco.WINBACK
    assert reco.scenario_for(None, None) == reco.WINBACK
    assert reco.scenario_for(None, {"frequency": 1, "recency_days": 200, "score": 3}) == "win-back"
    assert reco.scenario_for(None, {"frequency": 3, "recency_days": 20, "score": 1.33}) == "rebuy"
    assert reco.scenario_for(None, {"frequency": 3, "recency_days": 20, "score": 3.67}) == (
        "cross-sell"
    )


def test_no_contacts_no_rows() -> None:
    empty = pl.DataFrame(schema={"contact_id": pl.Int64(), "scenario": pl.String()})
    model = reco.build_model(lines(), NOW, SETTINGS)
    assert reco.recommend(model, lines(), empty, NOW, SETTINGS).height == 0


def test_the_scenario_column_agrees_with_scenario_for() -> None:
    cases: list[tuple[str | None, dict[str, float | int | None] | None]] = [
        ("VIP", None),
        ("At Risk", {"frequency": 5, "recency_days": 3, "score": 4}),
        ("Churn", None),
        ("Something else", {"frequency": 3, "recency_days": 20, "score": 3.67}),
        (None, None),
        (None, {"frequency": 0, "recency_days": None, "score": None}),
        (None, {"frequency": 1, "recency_days": 200, "score": 3}),
        (None, {"frequency": 2, "recency_days": 200, "score": 3}),
        (None, {"frequency": 3, "recency_days": 20, "score": 1.5}),
        (None, {"frequency": 3, "recency_days": 20, "score": None}),
        (None, {"frequency": 3, "recency_days": 20, "score": 1.51}),
    ]
    frame = pl.DataFrame(
        [
            (
                segment,
                *(None if rfm is None else rfm.get(k) for k in ("frequency", "recency_days")),
                None if rfm is None else rfm.get("score"),
            )
            for segment, rfm in cases
        ],
        schema={
            "segment": pl.String(),
            "frequency": pl.Int64(),
            "recency_days": pl.Int64(),
            "score": pl.Float64(),
        },
        orient="row",
    )
    c = pl.col
    got = frame.select(
        reco.scenario_column(c("segment"), c("frequency"), c("recency_days"), c("score"))
    ).to_series()
    assert got.to_list() == [reco.scenario_for(segment, rfm) for segment, rfm in cases]
