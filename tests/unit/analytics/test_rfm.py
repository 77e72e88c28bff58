"""RFM figures and scores against hand-computed tables (analytics/rfm.py)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from nurture.analytics import rfm
from nurture.commerce.purchases import load_config
from nurture.errors import ConfigError
from nurture.pack import load_pack

NOW = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)


def orders(spec: list[tuple[int, int, int | None, float | None]]) -> pl.DataFrame:
    """``(contact, order, days ago, net)`` rows; several rows with one order id are its lines."""
    return rfm.orders_frame(
        [(c, o, NOW - timedelta(days=d) if d is not None else None, net) for c, o, d, net in spec]
    )


def by_contact(frame: pl.DataFrame) -> dict[int, dict[str, object]]:
    return {row["contact_id"]: row for row in frame.iter_rows(named=True)}


# The prototype's crashing case: frequencies 1,1,1,1,1,1,2,8 give quartile edges (1, 1, 1.25)
# and pandas raised "Bin edges must be unique". Recency and monetary are chosen to exercise ties.
#
# contact  recency  orders  monetary | r  f  m | score
#    1        10       1       50    | 4  2  1 | 2.33
#    2        20       1       50    | 4  2  1 | 2.33
#    3        30       1      100    | 3  2  2 | 2.33
#    4        40       1      100    | 3  2  2 | 2.33
#    5        50       1      100    | 2  2  2 | 2.0
#    6        60       1      200    | 2  2  3 | 2.33
#    7        70       2      300    | 1  4  4 | 3.0
#    8        80       8     1000    | 1  4  4 | 3.0
#
# percentile = (share below + half the share equal); score = ceil(4 x percentile):
#   f=1: (0 + 6/2)/8 = 0.375 -> 2     f=2: (6 + 0.5)/8 = 0.8125 -> 4     f=8: 7.5/8 -> 4
#   m=50: (0 + 1)/8 -> 1   m=100: (2 + 1.5)/8 = 0.4375 -> 2   m=200: 5.5/8 -> 3   m=300: -> 4
#   recency is reversed: 10 days -> 1 - 0.5/8 -> 4, 30 days -> 1 - 2.5/8 = 0.6875 -> 3,
#   50 days -> 1 - 4.5/8 = 0.4375 -> 2, 70 days -> 1 - 6.5/8 = 0.1875 -> 1
EXPECTED = {
    1: (10, 1, 50.0, 4, 2, 1, 2.33),
    2: (20, 1, 50.0, 4, 2, 1, 2.33),
    3: (30, 1, 100.0, 3, 2, 2, 2.33),
    4: (40, 1, 100.0, 3, 2, 2, 2.33),
    5: (50, 1, 100.0, 2, 2, 2, 2.0),
    6: (60, 1, 200.0, 2, 2, 3, 2.33),
    7: (70, 2, 300.0, 1, 4, 4, 3.0),
    8: (80, 8, 1000.0, 1, 4, 4, 3.0),
}


def prototype_case() -> pl.DataFrame:
    rows: list[tuple[int, int, int | None, float | None]] = [
        # contact 1's single order has three lines: frequency counts orders, not lines
        (1, 1, 10, 20.0),
        (1, 1, 10, 20.0),
        (1, 1, 10, 10.0),
        (2, 2, 20, 50.0),
        (3, 3, 30, 100.0),
        (4, 4, 40, 100.0),
        (5, 5, 50, 100.0),
        (6, 6, 60, 200.0),
        (7, 7, 70, 100.0),
        (7, 8, 75, 200.0),
    ]
    rows += [(8, 100 + k, 80 + k, 125.0) for k in range(8)]
    return orders(rows)


def test_prototype_crashing_frequencies_score_by_hand() -> None:
    scored = by_contact(rfm.score(rfm.summarize(prototype_case(), NOW)))
    got = {
        cid: (r["recency_days"], r["frequency"], r["monetary"], r["r"], r["f"], r["m"], r["score"])
        for cid, r in scored.items()
    }
    assert got == EXPECTED


def test_single_customer_scores_the_middle() -> None:
    scored = rfm.score(rfm.summarize(orders([(1, 1, 3, 42.0)]), NOW)).row(0, named=True)
    assert (scored["r"], scored["f"], scored["m"], scored["score"]) == (2, 2, 2, 2.0)
    assert scored["recency_days"] == 3 and scored["frequency"] == 1 and scored["monetary"] == 42.0


def test_all_equal_values_share_one_score() -> None:
    frame = orders([(c, c, 30, 10.0) for c in range(1, 6)])
    scored = rfm.score(rfm.summarize(frame, NOW))
    assert scored.select("r", "f", "m", "score").unique().rows() == [(2, 2, 2, 2.0)]


def test_missing_dates_and_amounts_score_one_and_do_not_disturb_the_rest() -> None:
    frame = orders([(1, 1, None, None), (2, 2, 5, 80.0), (3, 3, 40, 20.0)])
    scored = by_contact(rfm.score(rfm.summarize(frame, NOW)))
    assert scored[1]["recency_days"] is None and scored[1]["last_order_at"] is None
    assert scored[1]["monetary"] is None
    assert (scored[1]["r"], scored[1]["m"]) == (1, 1)
    # the two known values rank among themselves: (0 + 1/2)/2 -> 1 and (1 + 1/2)/2 -> 3
    assert (scored[2]["r"], scored[2]["m"]) == (3, 3)
    assert (scored[3]["r"], scored[3]["m"]) == (1, 1)


def test_recency_is_whole_days_and_never_negative() -> None:
    frame = rfm.orders_frame(
        [(1, 1, NOW - timedelta(days=2, hours=23), 1.0), (2, 2, NOW + timedelta(days=1), 1.0)]
    )
    got = by_contact(rfm.summarize(frame, NOW))
    assert got[1]["recency_days"] == 2 and got[2]["recency_days"] == 0


def test_fixed_bands_replace_quartiles_per_dimension() -> None:
    bands = rfm.RfmBands(recency_days=(30, 90, 180), frequency=(1, 3, 6))
    scored = by_contact(rfm.score(rfm.summarize(prototype_case(), NOW), bands))
    # guide bands: R 0-30 -> 4, 31-90 -> 3; F 1 -> 1, 2-3 -> 2, 7+ -> 4; M still by rank
    assert [(scored[c]["r"], scored[c]["f"], scored[c]["m"]) for c in (1, 3, 7, 8)] == [
        (4, 1, 1),
        (4, 1, 2),
        (3, 2, 4),
        (3, 4, 4),
    ]
    assert rfm.score_one({"recency_days": 181, "frequency": 4, "monetary": None}, {}, bands) == {
        "r": 1,
        "f": 3,
        "m": 1,
        "score": 1.67,
    }


def test_bands_must_ascend() -> None:
    with pytest.raises(ValidationError):
        rfm.RfmBands(frequency=(3, 3, 6))


def test_incremental_scoring_against_the_baseline_matches_the_full_pass() -> None:
    summary = rfm.summarize(prototype_case(), NOW)
    baseline = rfm.baseline(summary)
    for row in rfm.score(summary).iter_rows(named=True):
        one = rfm.score_one(row, baseline)
        assert one == {k: row[k] for k in ("r", "f", "m", "score")}


def test_large_bases_keep_a_sampled_baseline() -> None:
    frame = orders([(c, c, c % 400, float(c)) for c in range(1, 10_001)])
    summary = rfm.summarize(frame, NOW)
    baseline = rfm.baseline(summary)
    assert len(baseline["monetary"]) == rfm.BASELINE_POINTS and baseline["contacts"] == 10_000
    full = by_contact(rfm.score(summary))
    for cid in (1, 2_600, 5_000, 7_400, 10_000):
        assert rfm.score_one(full[cid], baseline)["m"] == full[cid]["m"]


def test_stored_document() -> None:
    scored = rfm.score(rfm.summarize(orders([(1, 1, 3, 42.0)]), NOW))
    [(cid, text)] = rfm.records(scored).rows()
    assert cid == 1
    assert pl.Series([text]).str.json_decode().to_list()[0] == {
        "recency_days": 3,
        "frequency": 1,
        "monetary": 42.0,
        "r": 2,
        "f": 2,
        "m": 2,
        "score": 2.0,
        "last_order_at": "2026-11-20T09:00:00Z",
    }
    assert rfm.document(scored.row(0, named=True)) == {
        "recency_days": 3,
        "frequency": 1,
        "monetary": 42.0,
        "r": 2,
        "f": 2,
        "m": 2,
        "score": 2.0,
        "last_order_at": "2026-11-20T09:00:00Z",
    }


def test_bands_and_recommendation_settings_come_from_the_automation_folder(
    tmp_path: Path,
) -> None:

    (tmp_path / "scoring.yaml").write_text(
        "scoring:\n  base: 50\n  rfm:\n    frequency: [1, 3, 6]\n", encoding="utf-8"
    )
    (tmp_path / "reco.yaml").write_text("recommendations:\n  n: 5\n", encoding="utf-8")
    config = load_config(load_pack(tmp_path))
    assert config.bands == rfm.RfmBands(frequency=(1, 3, 6))
    assert config.recommendations.n == 5 and config.recommendations.silence_days == 135

    (tmp_path / "scoring.yaml").write_text(
        "scoring:\n  rfm:\n    frequency: [6, 3, 1]\n", encoding="utf-8"
    )
    with pytest.raises(ConfigError, match=r"scoring.yaml:3: rfm.frequency"):
        load_config(load_pack(tmp_path))

    (tmp_path / "scoring.yaml").unlink()
    assert load_config(load_pack(tmp_path)).bands is None  # absent: quartiles


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.one_of(st.none(), st.integers(1, 6)),
            st.one_of(
                st.none(),
                st.integers(-400 * 86_400_000_000, 3 * 86_400_000_000).map(
                    lambda us: NOW - timedelta(microseconds=us)
                ),
            ),
            st.one_of(st.none(), st.integers(-(10**7), 10**9).map(lambda cents: cents / 100)),
        ),
        min_size=1,
        max_size=12,
    )
)
def test_one_contacts_summary_in_python_equals_the_vectorised_one(
    rows: list[tuple[int | None, datetime | None, float | None]],
) -> None:
    """A purchase refreshes its contact with ``summarize_one``; the nightly pass and the import
    use ``summarize``: the same orders must give the same figures either way."""
    frame = rfm.orders_frame([(7, order_id, at, amount) for order_id, at, amount in rows])
    assert rfm.summarize_one(7, rows, NOW) == rfm.summarize(frame, NOW).row(0, named=True)
    assert rfm.summarize_one(7, [], NOW) is None
