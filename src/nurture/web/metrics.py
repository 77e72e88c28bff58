"""``/metrics`` in the Prometheus text format: read from the database at scrape time, so every
API process reports the same numbers whichever worker did the work."""

from __future__ import annotations

from collections.abc import Iterator

from fastapi import APIRouter, Request
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from nurture.bootstrap import Container
from nurture.storage import events as event_store
from nurture.storage import jobs as job_store

router = APIRouter(include_in_schema=False)


class DatabaseCollector(Collector):
    def __init__(self, container: Container) -> None:
        self.container = container

    def collect(self) -> Iterator[Metric]:
        now = self.container.clock.now()
        with self.container.db.read() as conn:
            job_counts = job_store.count_by_status(conn)
            due, oldest = job_store.oldest_due(conn, now)
            event_counts = event_store.count_by_status(conn)
        jobs = GaugeMetricFamily("nurture_jobs", "Jobs by status.", labels=["status"])
        for status in job_store.STATUSES:
            jobs.add_metric([status], job_counts.get(status, 0))
        yield jobs
        yield GaugeMetricFamily(
            "nurture_jobs_due", "Jobs whose run_at has passed, not yet taken by a worker.", due
        )
        lateness = max(0.0, (now - oldest).total_seconds()) if oldest is not None else 0.0
        yield GaugeMetricFamily(
            "nurture_jobs_lateness_seconds",
            "How long the oldest due job has been waiting past its run_at.",
            lateness,
        )
        events = GaugeMetricFamily("nurture_events", "Inbox events by status.", labels=["status"])
        for status, count in sorted(event_counts.items()):
            events.add_metric([status], count)
        yield events


def render(container: Container) -> bytes:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(DatabaseCollector(container))
    return generate_latest(registry)


@router.get("/metrics")
async def metrics(request: Request) -> Response:
    container: Container = request.app.state.nurture.container
    body = await run_in_threadpool(render, container)
    return Response(body, media_type=CONTENT_TYPE_LATEST)
