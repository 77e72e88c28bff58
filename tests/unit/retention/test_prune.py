"""The pure parts of the pruning pass: where a walk stops, the job's slots, the settings."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from nurture.config import Settings, load_settings
from nurture.errors import ConfigError
from nurture.retention import Policy
from nurture.retention.prune import (
    Walk,
    aged_walk,
    fate_walk,
    history_walk,
    next_run,
    raw_walk,
    run_key,
)
from nurture.storage.retention import GONE, KEPT, LATER

T = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)
CUTOFF = T
OLD, YOUNG = T - timedelta(days=1), T + timedelta(seconds=1)


def test_the_raw_walk_clears_processed_events_before_the_cutoff_and_skips_failed_ones() -> None:
    rows = [
        (11, "processed", OLD, True),
        (12, "failed", OLD, True),  # keeps its raw, does not stop the walk
        (13, "processed", OLD, False),  # nothing left to clear (a derived event)
        (14, "processed", OLD, True),
    ]
    assert raw_walk(rows, 10, CUTOFF) == Walk([11, 14], 14, False)


@pytest.mark.parametrize(
    "blocker",
    [(12, "pending", None, True), (12, "processed", YOUNG, True), (12, "processed", T, True)],
)
def test_the_raw_walk_stops_at_an_event_inside_its_window(
    blocker: tuple[int, str, datetime | None, bool],
) -> None:
    rows = [(11, "processed", OLD, True), blocker, (13, "processed", OLD, True)]
    assert raw_walk(rows, 10, CUTOFF) == Walk([11], 11, True)


def test_an_empty_batch_leaves_the_mark_where_it_was() -> None:
    assert raw_walk([], 10, CUTOFF) == Walk([], 10, False)
    assert aged_walk([], 7, CUTOFF) == Walk([], 7, False)


def test_the_aged_walk_takes_the_prefix_before_the_cutoff() -> None:
    assert aged_walk([(1, OLD), (2, OLD), (3, YOUNG), (4, OLD)], 0, CUTOFF) == Walk([1, 2], 2, True)
    # A third column says whether the row is worth changing; the mark passes it either way.
    assert aged_walk([(1, OLD, False), (2, OLD, True)], 0, CUTOFF) == Walk([2], 2, False)


def test_the_history_walk_deletes_old_events_and_passes_over_kept_ones() -> None:
    rows = [
        (11, "processed", OLD, False),
        (12, "failed", OLD, False),  # kept for a replay
        (13, "processed", OLD, True),  # a live enrolment reads it
        (14, "processed", OLD, False),
        (15, "pending", None, False),  # the walk waits here
        (16, "processed", OLD, False),
    ]
    assert history_walk(rows, 10, CUTOFF) == Walk([11, 14], 14, True)
    assert history_walk(rows[:2], 10, CUTOFF) == Walk([11], 12, False)


def test_the_fate_walk_follows_the_events() -> None:
    rows = [(1, OLD, GONE), (2, OLD, KEPT), (3, OLD, GONE), (4, OLD, LATER), (5, OLD, GONE)]
    assert fate_walk(rows, 0, CUTOFF) == Walk([1, 3], 3, True)
    assert fate_walk([(1, OLD, GONE), (2, YOUNG, GONE)], 0, CUTOFF) == Walk([1], 1, True)
    assert fate_walk([(1, OLD, KEPT)], 0, CUTOFF) == Walk([], 1, False)


def test_slots_are_aligned_so_every_worker_names_the_same_job() -> None:
    hour = timedelta(hours=1)
    assert next_run(T, hour) == T + hour  # strictly after
    assert next_run(T + timedelta(minutes=59), hour) == T + hour
    assert next_run(T + timedelta(seconds=1), timedelta(minutes=15)) == T + timedelta(minutes=15)
    assert run_key(T + hour) == "retention_prune:20261123T100000Z"


def test_the_policy_comes_from_the_settings() -> None:
    s = Settings(
        retention_raw_days=7,
        retention_job_days=0,
        retention_delivery_days=3,
        retention_timeline_days=0,
        retention_history_days=90,
        retention_batch_size=500,
    )
    assert Policy.from_settings(s) == Policy(7, 0, 3, 0, 90, 500)
    assert Policy.from_settings(s).enabled
    assert not Policy(0, 0, 0, 0, 0).enabled
    assert Policy(0, 0, 0, 0, 1).enabled
    assert Policy.from_settings(Settings()) == Policy(30, 14, 30, 180, 365, 500)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("retention_raw_days", -1),
        ("retention_job_days", "soon"),
        ("retention_delivery_days", 100_000),
        ("retention_timeline_days", 1.5),
        ("retention_history_days", -3),
        ("retention_batch_size", 0),
        ("retention_interval_minutes", 0),
    ],
)
def test_a_bad_retention_setting_names_its_variable(field: str, value: object) -> None:
    with pytest.raises(ConfigError) as err:
        load_settings(**{field: value})
    assert f"NURTURE_{field.upper()}" in str(err.value)
