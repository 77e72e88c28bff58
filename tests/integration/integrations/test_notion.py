"""The Notion mirror against a local Notion fake (a real HTTP server on 127.0.0.1).

Checks the documented request shapes (headers, the query filter, page properties), that a
burst of events makes one write, that an unchanged contact makes none, that a 429's
``Retry-After`` is honoured, that a page deleted in Notion is recreated, and that two workers
with their own connections share one 3 requests/s budget.
"""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from nurture.bootstrap import Container, build_container, build_steps
from nurture.clock import VirtualClock
from nurture.config import Settings
from nurture.errors import FieldProblem
from nurture.intake.ingest import Ingestor
from nurture.intake.process import EventProcessor
from nurture.integrations.notion import (
    JOB_KIND,
    NOTION_RETRY,
    NotionMirror,
    NotionMirrorStep,
    load_notion_endpoints,
)
from nurture.jobs import HandlerRegistry, JobWorker
from nurture.pack import DEFAULTS_DIR, load_pack
from nurture.providers.track.inbound import parse_canonical
from nurture.storage import jobs as job_store
from nurture.storage import notion as notion_store
from nurture.testing import Scripted, serve
from nurture.testing.notion import TOKEN, NotionFake

DATABASE = "0123456789abcdef0123456789abcdef"
SCHEMA = {
    "Email": "email",
    "Name": "title",
    "Segment": "select",
    "Score": "number",
    "Tags": "multi_select",
    "Booking Status": "select",
    "Call Date": "date",
    "Email 1 Sent": "date",
}


def endpoint_yaml(url: str) -> str:
    return f"""
endpoints:
  - name: notion-contacts
    kind: notion
    secret_env: NURTURE_NOTION_TOKEN
    database_id: {DATABASE}
    url: {url}
    key: Email
    coalesce: 5s
    properties:
      Email: {{type: email, from: contact.email}}
      Name: {{type: title, value: "{{{{ contact.first_name }}}} {{{{ contact.last_name }}}}"}}
      Segment: {{type: select, from: contact.segments.assessment}}
      Score: {{type: number, from: contact.score}}
      Tags: {{type: multi_select, from: contact.tags}}
      Booking Status: {{type: select, from: contact.attributes.booking_status}}
      Call Date: {{type: date, from: contact.attributes.call_date}}
      Email 1 Sent: {{type: date, from: emails.christmas_email_1.sent_at}}
"""


@pytest.fixture
def notion() -> Iterator[tuple[NotionFake, str]]:
    fake = NotionFake(DATABASE, SCHEMA)
    with serve(fake.app()) as url:
        yield fake, url


class Rig:
    """Processor (default steps + the mirror step) and job workers over one database."""

    def __init__(self, settings: Settings, clock: VirtualClock) -> None:
        self.clock = clock
        self.settings = settings
        self.container = build_container(settings, clock=clock)
        pack = load_pack(settings.automation_dir)
        self.endpoints = load_notion_endpoints(pack, settings)
        steps = build_steps(self.container)
        # bootstrap adds the mirror step (last) when the folder declares a Notion endpoint
        assert isinstance(steps[-1], NotionMirrorStep)
        self.processor = EventProcessor(self.container.db, clock, steps)
        self.ingestor = Ingestor(self.container.db, clock)
        self.containers: list[Container] = [self.container]

    def send(self, payload: dict[str, Any]) -> None:
        problems: list[FieldProblem] = []
        event = parse_canonical(payload, "", "api", problems)
        assert event is not None, problems
        self.ingestor.store([event])
        self.processor.drain()

    def worker(
        self, name: str, *, own_connection: bool = False, max_wait: float = 5.0, batch: int = 50
    ) -> JobWorker:
        container = self.container
        if own_connection:
            container = build_container(self.settings, clock=self.clock)
            self.containers.append(container)
        registry = HandlerRegistry()
        # No keep-alive: every asyncio.run() below is a new event loop.
        client = httpx.AsyncClient(limits=httpx.Limits(max_keepalive_connections=0))
        mirror = NotionMirror(container.db, self.clock, self.endpoints, client, max_wait=max_wait)
        registry.register(JOB_KIND, mirror.sync, max_attempts=25, retry=NOTION_RETRY)
        return JobWorker(container, registry, worker_id=name, batch_size=batch, concurrency=8)

    def jobs(self) -> list[dict[str, Any]]:
        with self.container.db.read() as conn:
            return job_store.search(conn, kind=JOB_KIND, limit=500)

    def close(self) -> None:
        self.ingestor.close()
        for c in self.containers:
            c.close()


@pytest.fixture
def rig(
    notion: tuple[NotionFake, str],
    make_settings: Callable[..., Settings],
    clock: VirtualClock,
    tmp_path: Path,
) -> Iterator[Rig]:
    folder = tmp_path / "automation"
    shutil.copytree(DEFAULTS_DIR, folder)
    # Without sequences no e-mail is pending, so every sync here comes from an event (the
    # follow-up syncs after e-mails are covered end to end in tests/e2e).
    (folder / "sequences.yaml").unlink()
    (folder / "notion.yaml").write_text(endpoint_yaml(notion[1]))
    settings = make_settings(automation_dir=folder, extra_secrets={"NURTURE_NOTION_TOKEN": TOKEN})
    r = Rig(settings, clock)
    yield r
    r.close()


def signup(email: str, red: int, **data: Any) -> dict[str, Any]:
    return {
        "type": "form.submitted",
        "contact": {"email": email, "first_name": "Ann", "last_name": "Lee"},
        "data": {"form": "christmas-assessment", "red_systems": red, "orange_systems": 0, **data},
    }


def test_a_burst_makes_one_page_with_the_documented_request_shapes(
    rig: Rig, notion: tuple[NotionFake, str]
) -> None:
    fake, _ = notion
    rig.send(signup("ann@example.com", 2))
    rig.send({"type": "page.viewed", "contact": {"email": "ann@example.com"}, "data": {"n": 1}})
    rig.send({"type": "page.viewed", "contact": {"email": "ann@example.com"}, "data": {"n": 2}})
    assert len(rig.jobs()) == 1  # three events, one pending sync

    worker = rig.worker("w1")
    assert asyncio.run(worker.drain()) == 0  # not due before the coalescing window
    rig.clock.advance(timedelta(seconds=5))
    assert asyncio.run(worker.drain()) == 1

    query, create = fake.requests
    assert (query.method, query.path) == ("POST", f"/v1/databases/{DATABASE}/query")
    assert query.body == {
        "filter": {"property": "Email", "email": {"equals": "ann@example.com"}},
        "page_size": 1,
    }
    for r in fake.requests:
        assert r.headers["authorization"] == f"Bearer {TOKEN}"
        assert r.headers["notion-version"] == "2022-06-28"
    assert (create.method, create.path) == ("POST", "/v1/pages")
    assert create.body["parent"] == {"database_id": DATABASE}
    props = create.body["properties"]
    assert props["Email"] == {"email": "ann@example.com"}
    assert props["Name"] == {"title": [{"type": "text", "text": {"content": "Ann Lee"}}]}
    assert props["Segment"] == {"select": {"name": "CRITICAL"}}
    assert props["Email 1 Sent"] == {"date": None}
    assert isinstance(props["Score"]["number"], int)
    page = fake.page_for("Email", "ann@example.com")
    assert page["Segment"] == "CRITICAL" and page["Booking Status"] is None

    # A booking changes the contact: one PATCH of the same page, no new query.
    rig.clock.advance(timedelta(minutes=1))
    rig.send(
        {
            "type": "booking.created",
            "contact": {"email": "ann@example.com"},
            "data": {
                "booking_uid": "bk1",
                "start_time": "2026-12-02T02:30:00+00:00",
                "attendee": {"email": "ann@example.com", "time_zone": "America/Toronto"},
            },
        }
    )
    rig.clock.advance(timedelta(seconds=5))
    assert asyncio.run(worker.drain()) == 1
    patch = fake.requests[-1]
    assert len(fake.requests) == 3
    assert patch.method == "PATCH" and patch.path.startswith("/v1/pages/")
    page = fake.page_for("Email", "ann@example.com")
    assert page["Booking Status"] == "booked" and page["Call Date"] == "2026-12-01"

    # An event that changes nothing mirrored: the sync runs and writes nothing.
    rig.clock.advance(timedelta(minutes=1))
    rig.send({"type": "custom.ping", "contact": {"email": "ann@example.com"}, "data": {}})
    rig.clock.advance(timedelta(seconds=5))
    assert asyncio.run(worker.drain()) == 1
    assert len(fake.requests) == 3


def test_429_retry_after_is_honoured(rig: Rig, notion: tuple[NotionFake, str]) -> None:
    fake, _ = notion
    fake.script.append(
        Scripted(429, {"object": "error", "code": "rate_limited"}, {"Retry-After": "30"})
    )
    rig.send(signup("bob@example.com", 1))
    rig.clock.advance(timedelta(seconds=5))
    worker = rig.worker("w1")
    asyncio.run(worker.drain())
    [job] = rig.jobs()
    assert job["status"] == "failed"
    assert job["run_at"] >= rig.clock.now() + timedelta(seconds=30)
    assert "429" in job["last_error"]
    rig.clock.advance(timedelta(seconds=29))
    assert asyncio.run(worker.drain()) == 0  # still waiting as told
    rig.clock.advance(timedelta(seconds=NOTION_RETRY.max_seconds))
    assert asyncio.run(worker.drain()) == 1
    assert rig.jobs()[0]["status"] == "done"
    assert fake.page_for("Email", "bob@example.com")["Segment"] == "URGENT"


def test_a_page_deleted_in_notion_is_recreated(rig: Rig, notion: tuple[NotionFake, str]) -> None:
    fake, _ = notion
    worker = rig.worker("w1")
    rig.send(signup("cy@example.com", 0))
    rig.clock.advance(timedelta(seconds=5))
    asyncio.run(worker.drain())
    [first] = fake.pages
    fake.pages[first]["archived"] = True
    rig.clock.advance(timedelta(minutes=1))
    rig.send(signup("cy@example.com", 3, assessment_round=2))
    rig.clock.advance(timedelta(seconds=5))
    asyncio.run(worker.drain())
    live = [p for p in fake.pages.values() if not p["archived"]]
    assert len(live) == 1
    assert fake.page_for("Email", "cy@example.com")["Segment"] == "CRITICAL"
    with rig.container.db.read() as conn:
        cid = rig.jobs()[0]["contact_id"]
        row = notion_store.get(conn, "notion-contacts", cid)
    assert row is not None and row["page_id"] != first


def test_a_bad_mapping_is_a_permanent_failure(rig: Rig, notion: tuple[NotionFake, str]) -> None:
    fake, _ = notion
    fake.schema["Segment"] = "number"  # the database disagrees with the mapping
    rig.send(signup("dee@example.com", 2))
    rig.clock.advance(timedelta(seconds=5))
    asyncio.run(rig.worker("w1").drain())
    [job] = rig.jobs()
    assert job["status"] == "dead"
    assert "validation_error" in job["last_error"]


def test_two_workers_share_three_requests_per_second(
    rig: Rig, notion: tuple[NotionFake, str]
) -> None:
    """The clock stands still: the shared bucket holds 3 tokens, whoever takes them."""
    fake, _ = notion
    for i in range(8):
        rig.send(signup(f"lead{i}@example.com", i % 3))
    rig.clock.advance(timedelta(seconds=5))
    # Each worker has its own database engine (connections), like two processes.
    w1 = rig.worker("w1", own_connection=True, max_wait=0, batch=4)
    w2 = rig.worker("w2", own_connection=True, max_wait=0, batch=4)

    async def both() -> None:
        await asyncio.gather(w1.run_once(), w2.run_once())

    asyncio.run(both())
    assert len(fake.requests) == 3
    workers = {j["worker"] for j in rig.jobs() if j["worker"]}
    assert workers == {"w1", "w2"}  # both took jobs; the bucket, not the split, held the rate
    # 8 new contacts: one query and one create each. Every round the bucket is full again
    # (capped at 3 tokens) and every retry is due; an attempt cut short by the limit resumes
    # where it stopped, so each round makes exactly 3 requests until the 16 are done.
    for round_ in range(2, 8):
        rig.clock.advance(timedelta(seconds=NOTION_RETRY.max_seconds + 1))
        asyncio.run(both())
        assert len(fake.requests) == min(3 * round_, 16)
    assert {j["status"] for j in rig.jobs()} == {"done"}, [j["last_error"] for j in rig.jobs()]
    assert len(fake.pages) == 8


def test_a_429_holds_every_worker_until_retry_after(
    rig: Rig, notion: tuple[NotionFake, str]
) -> None:
    """Notion throttles the integration, not one request: after one worker's 429 another worker
    (its own connections) makes no request before Retry-After, then all resume."""
    fake, _ = notion
    fake.script.append(
        Scripted(429, {"object": "error", "code": "rate_limited"}, {"Retry-After": "30"})
    )
    rig.send(signup("first@example.com", 2))
    rig.clock.advance(timedelta(seconds=5))
    # max_wait=0: a worker never sleeps for a token (the virtual clock would not move).
    w1 = rig.worker("w1", own_connection=True, max_wait=0)
    asyncio.run(w1.drain())
    assert len(fake.requests) == 1  # the 429

    for i in range(3):
        rig.send(signup(f"next{i}@example.com", 1))
    rig.clock.advance(timedelta(seconds=5))
    w2 = rig.worker("w2", own_connection=True, max_wait=0)
    assert asyncio.run(w2.drain()) == 3  # ran, and each gave its job back to wait
    assert len(fake.requests) == 1
    jobs = rig.jobs()
    # The 429'd job failed an attempt; the three held back by the shared limit waited without
    # using one (RateLimited): they are scheduled again, for when the pause ends.
    assert (
        sorted((j["status"], j["attempts"]) for j in jobs)
        == [("failed", 1)] + [("scheduled", 0)] * 3
    )
    assert all(j["run_at"] >= rig.clock.now() + timedelta(seconds=20) for j in jobs)

    rig.clock.advance(timedelta(seconds=NOTION_RETRY.max_seconds))
    for _ in range(4):  # 8 requests at 3 per round
        asyncio.run(w2.drain())
        asyncio.run(w1.drain())
        rig.clock.advance(timedelta(seconds=NOTION_RETRY.max_seconds))
    assert {j["status"] for j in rig.jobs()} == {"done"}
    assert len(fake.pages) == 4
