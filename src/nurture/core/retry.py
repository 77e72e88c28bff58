"""Retry policy as a pure function of (attempt, now, rng), shared by events and jobs."""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime, timedelta


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Exponential backoff with full jitter on the upper half, capped, with a maximum attempt count.

    ``attempt`` is the number of attempts already made (1 after the first failure).
    """

    base_seconds: float = 5.0
    factor: float = 4.0
    max_seconds: float = 6 * 3600.0
    max_attempts: int = 8
    jitter: float = 0.5  # fraction of the delay that is randomised

    def delay(self, attempt: int, rng: random.Random, retry_after: float | None = None) -> float:
        raw = min(self.max_seconds, self.base_seconds * self.factor ** max(0, attempt - 1))
        spread = raw * self.jitter
        delay = raw - spread + rng.random() * spread
        if retry_after is not None:
            # The provider said when; never come back earlier, never later than our own cap.
            delay = max(delay, min(float(retry_after), self.max_seconds))
        return delay

    def exhausted(self, attempt: int) -> bool:
        return attempt >= self.max_attempts

    def next_run(
        self, attempt: int, now: datetime, rng: random.Random, retry_after: float | None = None
    ) -> datetime | None:
        """When to try again, or ``None`` when the attempts are used up."""
        if self.exhausted(attempt):
            return None
        return now + timedelta(seconds=self.delay(attempt, rng, retry_after))
