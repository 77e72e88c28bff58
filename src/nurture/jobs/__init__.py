"""The durable job scheduler: timers in a table, claimed under leases by any number of workers.

Features enqueue inside their own transaction and register handlers in
``bootstrap.build_registry``; the worker runs them with retries, and nothing in memory stands
for a pending job. Imports ``storage`` (its SQL is ``storage/jobs.py``) and the pure layers,
never a feature: handlers come in through the registry.
"""

from __future__ import annotations

from nurture.jobs.registry import Handler, HandlerRegistry, HandlerSpec, JobContext
from nurture.jobs.schedule import (
    JobRef,
    JobSpec,
    cancel,
    cancel_where,
    due_at,
    enqueue,
    enqueue_many,
    reschedule,
)
from nurture.jobs.worker import JobWorker, Outcome

__all__ = [
    "Handler",
    "HandlerRegistry",
    "HandlerSpec",
    "JobContext",
    "JobRef",
    "JobSpec",
    "JobWorker",
    "Outcome",
    "cancel",
    "cancel_where",
    "due_at",
    "enqueue",
    "enqueue_many",
    "reschedule",
]
