"""Job handlers by kind, and what a handler sees while it runs."""

from __future__ import annotations

import inspect
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from nurture.core.retry import RetryPolicy
from nurture.errors import ConfigError

DEFAULT_RETRY = RetryPolicy()


@dataclass
class JobContext:
    """One attempt of one job. Handlers get their collaborators (database, clock, services)
    when they are registered, not from here: a handler names what it uses."""

    job_id: int
    key: str
    kind: str
    payload: dict[str, Any]
    attempt: int  # 1-based
    contact_id: int | None
    enrollment_id: int | None
    now: datetime
    last_beat: float = field(default_factory=time.monotonic, repr=False)

    def heartbeat(self) -> None:
        """Tell the worker this attempt is still making progress.

        The worker renews the lease of attempts that started or called ``heartbeat`` within the
        last lease period; a handler that runs longer than that must call it, or its job is
        taken as lost and run again elsewhere.
        """
        self.last_beat = time.monotonic()


Handler = Callable[[JobContext], Awaitable[None]] | Callable[[JobContext], None]


@dataclass(frozen=True)
class HandlerSpec:
    kind: str
    fn: Handler
    retry: RetryPolicy
    max_attempts: int
    is_async: bool


class HandlerRegistry:
    """``kind`` → handler. The worker claims only the kinds registered here."""

    def __init__(self, default_retry: RetryPolicy | None = None) -> None:
        self.default_retry = default_retry or DEFAULT_RETRY
        self._specs: dict[str, HandlerSpec] = {}

    def register(
        self,
        kind: str,
        fn: Handler,
        *,
        max_attempts: int | None = None,
        retry: RetryPolicy | None = None,
    ) -> None:
        if kind in self._specs:
            raise ConfigError(f"a handler for job kind {kind!r} is already registered")
        if max_attempts is not None and max_attempts < 1:
            raise ConfigError(f"job kind {kind!r}: max_attempts must be at least 1")
        policy = retry or self.default_retry
        self._specs[kind] = HandlerSpec(
            kind=kind,
            fn=fn,
            retry=policy,
            max_attempts=max_attempts or policy.max_attempts,
            is_async=inspect.iscoroutinefunction(fn),
        )

    def handler(
        self, kind: str, *, max_attempts: int | None = None, retry: RetryPolicy | None = None
    ) -> Callable[[Handler], Handler]:
        """Decorator form of ``register``: ``@registry.handler("send_email")``."""

        def decorate(fn: Handler) -> Handler:
            self.register(kind, fn, max_attempts=max_attempts, retry=retry)
            return fn

        return decorate

    def get(self, kind: str) -> HandlerSpec | None:
        return self._specs.get(kind)

    @property
    def kinds(self) -> list[str]:
        return sorted(self._specs)

    def __contains__(self, kind: object) -> bool:
        return kind in self._specs

    def __iter__(self) -> Iterator[HandlerSpec]:
        return iter(self._specs.values())

    def __len__(self) -> int:
        return len(self._specs)
