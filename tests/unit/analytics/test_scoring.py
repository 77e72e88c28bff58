"""The lead score formula: the prototype's examples, the recency boundaries, and invariants."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nurture.analytics.scoring import ScoreInputs, compute, crossings, decayed, inputs_for
from nurture.core.scoring import ScoringSpec

SPEC = ScoringSpec()
NOW = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)


def score(rfm: float, events: int, purchases: int, days: int | None) -> int:
    return compute(SPEC, ScoreInputs(rfm, events, purchases, days)).total


@pytest.mark.parametrize(
    ("rfm", "events", "purchases", "days", "expected"),
    [
        # prototypes.md §A5, computed from the prototype's code; SPEC §4 quotes four of them.
        (3.5, 5, 3, 10, 100),
        (3.5, 5, 2, 10, 100),
        (0, 0, 0, 0, 50),
        (0, 0, 0, None, 50),
        (1.0, 0, 0, 200, 30),
        (0, 0, 0, 365, 20),
        (2.0, 3, 1, 45, 76),
        (3.99, 0, 0, 91, 74),
    ],
)
def test_prototype_examples(
    rfm: float, events: int, purchases: int, days: int | None, expected: int
) -> None:
    assert score(rfm, events, purchases, days) == expected


@pytest.mark.parametrize(
    ("days", "penalty"),
    [(0, 0), (30, 0), (31, 5), (90, 5), (91, 15), (180, 15), (181, 30), (10_000, 30)],
)
def test_recency_boundaries(days: int, penalty: int) -> None:
    breakdown = compute(SPEC, ScoreInputs(days_since_purchase=days))
    assert breakdown.recency_penalty == penalty
    assert breakdown.total == 50 - penalty


def test_caps_and_truncation() -> None:
    b = compute(SPEC, ScoreInputs(rfm_score=9.0, engagement_events=50, purchases=50))
    assert (b.rfm, b.engagement_events, b.purchases) == (40, 20, 25)
    assert compute(SPEC, ScoreInputs(rfm_score=0.7)).rfm == 7  # 0.7 * 10 is 7.000000000000001
    assert compute(SPEC, ScoreInputs(rfm_score=2.39)).rfm == 23
    assert (
        compute(SPEC, ScoreInputs(rfm_score=-3, engagement_events=-4, purchases=-1)).profile == 50
    )


def test_engagement_is_added_unclamped_and_only_the_total_is_clamped() -> None:
    b = compute(SPEC, ScoreInputs(engagement=-180))
    assert b.raw == -130
    assert b.total == 0
    assert compute(SPEC, ScoreInputs(engagement=75)).total == 100


def test_inputs_from_contact_figures() -> None:
    rfm = {
        "score": 2.0,
        "frequency": 1,
        "last_order_at": (NOW - timedelta(days=45, hours=3)).isoformat(),
    }
    inputs = inputs_for(SPEC, rfm, {"events": 3, "sum": 15}, NOW)
    assert inputs == ScoreInputs(2.0, 3, 1, 45, 15.0)
    assert compute(SPEC, inputs).total == 91
    assert inputs_for(SPEC, None, {}, NOW) == ScoreInputs()


def test_days_are_counted_from_last_order_at_and_now() -> None:
    at = (NOW - timedelta(days=31)).isoformat()
    assert (
        inputs_for(SPEC, {"frequency": 1, "last_order_at": at}, {}, NOW).days_since_purchase == 31
    )
    # A stale recency_days is only a fallback when last_order_at is missing.
    rfm = {"frequency": 1, "recency_days": 5, "last_order_at": at}
    assert inputs_for(SPEC, rfm, {}, NOW).days_since_purchase == 31


def test_decay_halves_per_half_life() -> None:
    spec = ScoringSpec(half_life="30d")
    assert decayed(40.0, NOW - timedelta(days=30), NOW, spec) == pytest.approx(20.0)
    assert decayed(40.0, NOW - timedelta(days=60), NOW, spec) == pytest.approx(10.0)
    assert decayed(40.0, NOW - timedelta(days=60), NOW, SPEC) == 40.0  # off by default


def test_crossings() -> None:
    assert crossings(70, 85, [80]) == [(80, "up")]
    assert crossings(79, 80, [80]) == [(80, "up")]
    assert crossings(80, 95, [80]) == []
    assert crossings(85, 79, [80]) == [(80, "down")]
    assert crossings(10, 90, [50, 80]) == [(50, "up"), (80, "up")]
    assert crossings(0, 0, [80]) == []


@settings(deadline=None)
@given(
    rfm=st.floats(min_value=-10, max_value=10, allow_nan=False),
    events=st.integers(-100, 1000),
    purchases=st.integers(-100, 1000),
    days=st.one_of(st.none(), st.integers(0, 100_000)),
    engagement=st.floats(min_value=-1e6, max_value=1e6, allow_nan=False),
)
def test_score_is_always_within_bounds(
    rfm: float, events: int, purchases: int, days: int | None, engagement: float
) -> None:
    b = compute(SPEC, ScoreInputs(rfm, events, purchases, days, engagement))
    assert 0 <= b.total <= 100
    assert b.raw == b.profile + b.engagement


@settings(deadline=None)
@given(st.lists(st.integers(-120, 120), max_size=60))
def test_a_crossing_fires_once_per_upward_pass(deltas: list[int]) -> None:
    """Walk the score through random rule deltas: ups and downs alternate, and each up is
    exactly a step from below 80 to 80 or more."""
    current = 50
    fired: list[str] = []
    expected_ups = 0
    for delta in deltas:
        after = compute(SPEC, ScoreInputs(engagement=current - 50 + delta)).total
        if current < 80 <= after:
            expected_ups += 1
        fired.extend(direction for _, direction in crossings(current, after, [80]))
        current = after
    assert fired.count("up") == expected_ups
    assert all(a != b for a, b in itertools.pairwise(fired))
    if fired:
        assert fired[0] == "up"  # starting at 50, the first crossing can only go up
