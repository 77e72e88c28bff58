"""Per-provider token buckets shared by every worker through the database.

A provider that answers 429 (or 503) with ``Retry-After`` has throttled the whole account, not
one request: ``pause`` empties the shared bucket for that long, so every worker waits it out
instead of each spending a request to learn the same thing.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from nurture.clock import Clock
from nurture.database.engine import Database
from nurture.errors import RateLimited
from nurture.storage import rate_limits

# Sends per second when NURTURE_*_RATE_PER_SECOND is 0. Brevo documents 1,000 rps for
# /v3/smtp/email; Resend documents single-digit rps per team (2, later 5); SMTP relays vary.
DEFAULT_RATES = {
    "email:brevo": 100.0,
    "email:resend": 2.0,
    "email:smtp": 10.0,
    "sms:brevo": 10.0,
}

# A Retry-After longer than this is the provider's business, not a reason to stall all sends.
MAX_PAUSE_SECONDS = 3600.0


@dataclass
class RateLimiter:
    db: Database
    clock: Clock
    name: str
    rate: float
    burst: int
    # Waits longer than this give the worker back: the job runs again after the wait instead
    # (``RateLimited``: not counted as an attempt).
    max_wait: float = 5.0

    async def acquire(self) -> None:
        if self.rate <= 0:
            return
        while True:
            wait = await asyncio.to_thread(self._take)
            if wait <= 0:
                return
            if wait > self.max_wait:
                raise RateLimited(f"{self.name}: local rate limit", retry_after=wait)
            await asyncio.sleep(wait)

    async def acquire_up_to(self, wanted: int) -> tuple[int, float]:
        """Tokens for a batch: ``(granted, wait)``. Waits (at most ``max_wait`` at a time) until
        all ``wanted`` are granted or the next token is further away than ``max_wait``; then
        ``wait`` is that distance, the time the rest of the batch should come back after."""
        if self.rate <= 0 or wanted <= 0:
            return wanted, 0.0
        granted = 0
        while True:
            taken, wait = await asyncio.to_thread(self._take_up_to, wanted - granted)
            granted += taken
            if granted >= wanted:
                return granted, 0.0
            if wait > self.max_wait:
                return granted, wait
            await asyncio.sleep(wait)

    async def pause(self, seconds: float | None) -> None:
        """Hold every worker's next token back ``seconds`` (a provider's ``Retry-After``)."""
        if self.rate <= 0 or not seconds or seconds <= 0:
            return
        await asyncio.to_thread(self._hold, min(float(seconds), MAX_PAUSE_SECONDS))

    def _hold(self, seconds: float) -> None:
        with self.db.begin() as conn:
            rate_limits.hold(conn, self.name, self.rate, self.burst, seconds, self.clock.now())

    def _take_up_to(self, wanted: int) -> tuple[int, float]:
        with self.db.begin() as conn:
            return rate_limits.take_up_to(
                conn, self.name, self.rate, self.burst, self.clock.now(), wanted
            )

    def _take(self) -> float:
        with self.db.begin() as conn:
            return rate_limits.take(conn, self.name, self.rate, self.burst, self.clock.now())


def limiter_for(
    db: Database, clock: Clock, channel: str, provider: str, configured: float
) -> RateLimiter:
    name = f"{channel}:{provider}"
    rate = configured or DEFAULT_RATES.get(name, 0.0)
    return RateLimiter(db, clock, name, rate, max(1, int(rate)))
