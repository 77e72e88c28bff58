"""The retry decision is pure: (policy, attempt, error, now, rng) -> outcome."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest

from nurture.core.retry import RetryPolicy
from nurture.errors import ConfigError, ProviderError, RateLimited
from nurture.jobs import HandlerRegistry, JobContext, due_at
from nurture.jobs.worker import decide

NOW = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)
POLICY = RetryPolicy(base_seconds=10, factor=3, max_seconds=600, max_attempts=4, jitter=0.5)


def noop(ctx: JobContext) -> None:
    return None


def spec(retry: RetryPolicy = POLICY, max_attempts: int | None = None):  # type: ignore[no-untyped-def]
    registry = HandlerRegistry()
    registry.register("k", noop, retry=retry, max_attempts=max_attempts)
    found = registry.get("k")
    assert found is not None
    return found


def test_backoff_is_exponential_with_jitter_in_the_upper_half() -> None:
    rng = random.Random(7)
    for attempt, raw in [(1, 10.0), (2, 30.0), (3, 90.0), (4, 270.0), (5, 600.0), (9, 600.0)]:
        delay = POLICY.delay(attempt, rng)
        assert raw / 2 <= delay <= raw


def test_seeded_rng_gives_the_same_schedule() -> None:
    a = [POLICY.delay(n, random.Random(42)) for n in range(1, 6)]
    b = [POLICY.delay(n, random.Random(42)) for n in range(1, 6)]
    assert a == b
    rng = random.Random(42)
    expected = 10 * 0.5 + rng.random() * 10 * 0.5
    assert POLICY.delay(1, random.Random(42)) == expected


def test_retry_after_is_a_lower_bound_capped_by_the_policy() -> None:
    rng = random.Random(1)
    assert POLICY.delay(1, rng, retry_after=120) == 120
    assert POLICY.delay(1, rng, retry_after=10_000) == 600
    assert POLICY.delay(4, random.Random(1), retry_after=1) == POLICY.delay(4, random.Random(1))


def test_success_is_done() -> None:
    assert decide(spec(), 4, 1, None, NOW, random.Random(0)) == ("done", None, None)


def test_plain_error_retries_with_backoff_then_dies_at_max_attempts() -> None:
    rng = random.Random(3)
    status, run_at, error = decide(spec(), 4, 1, ValueError("boom"), NOW, rng)
    assert status == "failed"
    assert error == "ValueError: boom"
    assert run_at is not None
    assert NOW + timedelta(seconds=5) <= run_at <= NOW + timedelta(seconds=10)
    status, run_at, _ = decide(spec(), 4, 4, ValueError("boom"), NOW, rng)
    assert (status, run_at) == ("dead", None)


def test_permanent_provider_error_is_dead_at_once() -> None:
    exc = ProviderError("invalid recipient", permanent=True)
    status, run_at, error = decide(spec(), 4, 1, exc, NOW, random.Random(0))
    assert (status, run_at) == ("dead", None)
    assert error == "ProviderError: invalid recipient"


def test_retry_after_is_honoured() -> None:
    exc = ProviderError("rate limited", retry_after=300)
    status, run_at, _ = decide(spec(), 4, 1, exc, NOW, random.Random(0))
    assert status == "failed"
    assert run_at == NOW + timedelta(seconds=300)


def test_per_job_max_attempts_overrides_the_kind() -> None:
    assert decide(spec(), 1, 1, ValueError(), NOW, random.Random(0))[0] == "dead"
    assert decide(spec(), 10, 5, ValueError(), NOW, random.Random(0))[0] == "failed"


def test_kind_max_attempts_defaults_to_the_policy() -> None:
    assert spec().max_attempts == 4
    assert spec(max_attempts=2).max_attempts == 2


def test_duplicate_kind_is_refused() -> None:
    registry = HandlerRegistry()

    @registry.handler("send_email")
    async def send(ctx: JobContext) -> None:
        return None

    assert "send_email" in registry
    assert registry.get("send_email") is not None
    assert registry.get("send_email").is_async  # type: ignore[union-attr]
    with pytest.raises(ConfigError, match="send_email"):
        registry.register("send_email", noop)
    with pytest.raises(ConfigError, match="max_attempts"):
        registry.register("other", noop, max_attempts=0)


def test_time_scale_shrinks_delays_only() -> None:
    assert due_at(NOW, timedelta(days=1), 1440) == NOW + timedelta(minutes=1)
    assert due_at(NOW, timedelta(hours=2), 1) == NOW + timedelta(hours=2)
    with pytest.raises(ValueError, match="naive"):
        due_at(datetime(2026, 1, 1), timedelta(0), 1)


def test_a_rate_limit_wait_is_handed_back_for_then_not_retried() -> None:
    wait = RateLimited("email:brevo: local rate limit", retry_after=12.5)
    status, run_at, error = decide(spec(), 4, 4, wait, NOW, random.Random(0))
    assert (status, run_at) == ("scheduled", NOW + timedelta(seconds=12.5))
    assert error is not None and "local rate limit" in error
