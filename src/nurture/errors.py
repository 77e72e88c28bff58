"""One error root; leaves named for the condition.

``web/errors.py`` is the only place that turns these into HTTP statuses.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


class NurtureError(Exception):
    """Root of every error nurture raises on purpose."""


class ConfigError(NurtureError):
    """Settings or the automation folder are invalid; the message names the variable or file."""


class NotConfigured(NurtureError):
    """A source or feature is off because its secret or setting is missing."""


class NotFound(NurtureError):
    """The thing asked for does not exist."""


class Unauthenticated(NurtureError):
    """Missing or bad credentials, signature, or a timestamp outside the window."""


class StaleTimestamp(Unauthenticated):
    """A signed request whose timestamp is outside the tolerance window (replayed or slow clock)."""


class TooManyAttempts(NurtureError):
    """Too many failed attempts (console logins); try again after ``retry_after`` seconds."""

    def __init__(self, message: str, *, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class Forbidden(NurtureError):
    """Authenticated, but not allowed (e.g. a write key posting a non-behaviour event)."""


class MalformedPayload(NurtureError):
    """The body cannot be read at all (bad JSON, wrong shape)."""


class PayloadTooLarge(NurtureError):
    """The body is over the configured limit."""


class UnsupportedMediaType(NurtureError):
    """The Content-Type is not one the endpoint reads."""


@dataclass(frozen=True)
class FieldProblem:
    field: str
    message: str


class InvalidFields(NurtureError):
    """Schema errors; each failing field is named."""

    def __init__(self, problems: Sequence[FieldProblem]) -> None:
        self.problems = list(problems)
        super().__init__("; ".join(f"{p.field}: {p.message}" for p in self.problems))


class Conflict(NurtureError):
    """The request conflicts with the current state (e.g. retrying a job that is running)."""


class StorageUnavailable(NurtureError):
    """The database refused the write (locked, down); the sender should retry."""


class ProviderError(NurtureError):
    """A third-party call failed; ``permanent`` decides whether the job retries."""

    def __init__(
        self, message: str, *, permanent: bool = False, retry_after: float | None = None
    ) -> None:
        super().__init__(message)
        self.permanent = permanent
        self.retry_after = retry_after


class RateLimited(ProviderError):
    """Our own limit for a provider has no token for ``retry_after`` seconds. The job is given
    back for then and the wait is not an attempt: a campaign queued behind a 2/s limit must not
    use up its retries waiting its turn."""

    def __init__(self, message: str, *, retry_after: float) -> None:
        super().__init__(message, retry_after=retry_after)
