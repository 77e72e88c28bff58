"""Per-provider token buckets shared by every worker through the database."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from nurture.clock import Clock
from nurture.errors import ProviderError
from nurture.storage import rate_limits
from nurture.storage.engine import Database

# Sends per second when NURTURE_*_RATE_PER_SECOND is 0. Brevo documents 1,000 rps for
# /v3/smtp/email; Resend documents single-digit rps per team (2, later 5); SMTP relays vary.
DEFAULT_RATES = {
    "email:brevo": 100.0,
    "email:resend": 2.0,
    "email:smtp": 10.0,
    "sms:brevo": 10.0,
}


@dataclass
class RateLimiter:
    db: Database
    clock: Clock
    name: str
    rate: float
    burst: int
    # Waits longer than this give the worker back: the job retries after the wait instead.
    max_wait: float = 5.0

    async def acquire(self) -> None:
        if self.rate <= 0:
            return
        while True:
            wait = await asyncio.to_thread(self._take)
            if wait <= 0:
                return
            if wait > self.max_wait:
                raise ProviderError(f"{self.name}: local rate limit", retry_after=wait)
            await asyncio.sleep(wait)

    def _take(self) -> float:
        with self.db.begin() as conn:
            return rate_limits.take(conn, self.name, self.rate, self.burst, self.clock.now())


def limiter_for(
    db: Database, clock: Clock, channel: str, provider: str, configured: float
) -> RateLimiter:
    name = f"{channel}:{provider}"
    rate = configured or DEFAULT_RATES.get(name, 0.0)
    return RateLimiter(db, clock, name, rate, max(1, int(rate)))
