"""Retention: old raw payloads, finished jobs, delivery logs and timeline detail thinned out
after ``NURTURE_RETENTION_*_DAYS``, in small batches, by a recurring job and ``nurture prune``;
SQLite's freed pages given back to the file system. Imports ``jobs``, ``storage`` and the pure
layers; knows no feature (docs/retention.md says what each table keeps and why).
"""

from __future__ import annotations

from nurture.retention.prune import (
    JOB_KIND,
    Policy,
    Pruned,
    Pruner,
    PruneReport,
    register,
    schedule_loop,
)

__all__ = [
    "JOB_KIND",
    "Policy",
    "PruneReport",
    "Pruned",
    "Pruner",
    "register",
    "schedule_loop",
]
