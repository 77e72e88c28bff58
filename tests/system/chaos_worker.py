"""A worker process for the chaos tests: ``python -m tests.system.chaos_worker URL READY_DIR``.

Its only handler, ``effect``, writes the job's key into ``effects`` (UNIQUE key, counting
attempts) in its own transaction, like a provider call that happens outside the job's row.
"""

from __future__ import annotations

import asyncio
import os
import sys
from functools import partial
from pathlib import Path

from sqlalchemy import text

from nurture.bootstrap import build_container
from nurture.config import Settings
from nurture.database.engine import Database
from nurture.jobs import HandlerRegistry, JobContext, JobWorker
from nurture.runtime import install_stop_signals

EFFECTS_DDL = "CREATE TABLE effects (key VARCHAR(300) NOT NULL UNIQUE, attempts INTEGER NOT NULL)"


def effect(db: Database, ctx: JobContext) -> None:
    with db.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO effects (key, attempts) VALUES (:k, 1) "
                "ON CONFLICT (key) DO UPDATE SET attempts = effects.attempts + 1"
            ),
            {"k": ctx.key},
        )


async def main(url: str, ready_dir: Path) -> None:
    settings = Settings(
        database_url=url,
        # Short, so a killed worker's jobs come back quickly; not so short that a heartbeat
        # delayed by an oversubscribed machine lets a live attempt's lease expire.
        job_lease_seconds=10,
        job_grace_seconds=15,
        job_batch_size=100,
        job_concurrency=20,
        job_max_idle_seconds=1,
    )
    container = build_container(settings)
    registry = HandlerRegistry()
    registry.register("effect", partial(effect, container.db), max_attempts=1000)
    worker = JobWorker(container, registry)
    stop = asyncio.Event()
    install_stop_signals(stop)
    (ready_dir / f"{os.getpid()}.ready").touch()
    try:
        await worker.run(stop)
    finally:
        container.close()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], Path(sys.argv[2])))
