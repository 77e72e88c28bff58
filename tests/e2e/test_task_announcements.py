"""A rule creates a task; the endpoint subscribed to ``task.created`` gets it, signed.

A signed event goes in over HTTP, the rule's ``task`` job stores the task and, in the same
transaction, enqueues one ``webhook`` job per subscribed endpoint; the local receiver verifies
every request with the ``standardwebhooks`` library. A retried task job announces nothing again.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from nurture.bootstrap import build_job_worker, build_registry
from nurture.clock import VirtualClock
from nurture.config import Settings
from nurture.jobs import JobContext
from nurture.storage import endpoints as endpoint_store
from nurture.storage import jobs as job_store
from nurture.storage import tasks as task_store
from nurture.testing import Harness, harness, new_secret, signed_json
from tests.integration.providers.test_transports import Receiver

TRACK = new_secret()
HOOK = new_secret()

RULES = """\
rules:
  - id: callback
    on: custom.callback_requested
    do:
      - task: Call back
        kind: call
        priority: high
"""


@pytest.fixture
def clock() -> VirtualClock:
    # The receiver checks the signature's timestamp against its own clock (5 minutes' tolerance).
    return VirtualClock(datetime.now(UTC))


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver(HOOK) as r:
        yield r


@pytest.fixture
def h(
    make_settings: Callable[..., Settings],
    clock: VirtualClock,
    receiver: Receiver,
    tmp_path: Path,
) -> Iterator[Harness]:
    (tmp_path / "rules.yaml").write_text(RULES, encoding="utf-8")
    (tmp_path / "endpoints.yaml").write_text(
        f"""\
endpoints:
  - name: crm
    url: {receiver.url}
    secret: {HOOK}
    events: [task.created]
    allow_private: true
    payload:
      title: "{{{{ task.title }}}}"
      kind: "{{{{ task.kind }}}}"
      priority: "{{{{ task.priority }}}}"
      email: "{{{{ contact.email }}}}"
  - name: plain
    url: {receiver.url}
    secret: {HOOK}
    events: [task.created]
    allow_private: true
  - name: audit
    url: {receiver.url}
    secret: {HOOK}
    events: [order.shipped]
    allow_private: true
""",
        encoding="utf-8",
    )
    settings = make_settings(track_secret=TRACK, automation_dir=tmp_path)
    with harness(settings, clock) as hh:
        yield hh


def test_task_created_is_announced_once_and_verifiable(
    h: Harness, clock: VirtualClock, receiver: Receiver
) -> None:
    event = {
        "type": "custom.callback_requested",
        "contact": {"email": "ann@example.com", "first_name": "Ann"},
        "data": {},
    }
    body, headers = signed_json(TRACK, event, clock.now())
    assert h.client.post("/webhooks/track", content=body, headers=headers).status_code == 202
    h.process()
    asyncio.run(build_job_worker(h.container).drain())

    # Both verified by standardwebhooks before they were recorded.
    by_shape = {"title" in r["payload"]["data"]: r for r in receiver.received}
    assert len(receiver.received) == 2
    request, plain = by_shape[True], by_shape[False]
    # Without a payload template the endpoint gets the facts and the task itself.
    assert plain["payload"]["type"] == "task.created"
    data = plain["payload"]["data"]
    assert set(data) == {"contact", "event", "rule_id", "task"}
    assert data["rule_id"] == "callback" and data["contact"]["email"] == "ann@example.com"
    assert data["event"]["type"] == "custom.callback_requested"
    assert {k: data["task"][k] for k in ("title", "kind", "priority", "status")} == {
        "title": "Call back",
        "kind": "call",
        "priority": "high",
        "status": "open",
    }
    assert request["payload"]["type"] == "task.created"
    assert request["payload"]["data"] == {
        "title": "Call back",
        "kind": "call",
        "priority": "high",
        "email": "ann@example.com",
    }
    with h.container.db.read() as conn:
        [task] = task_store.search(conn)
        [announcement] = [
            j
            for j in job_store.search(conn, kind="webhook")
            if j["key"].startswith("announce:crm:")
        ]
        [logged] = endpoint_store.deliveries_for(conn, "crm")
    assert announcement["key"] == f"announce:crm:{task['key']}"
    assert announcement["status"] == "done"
    assert logged["status_code"] == 204 and logged["webhook_id"] == request["headers"]["webhook-id"]

    # The task job runs again (its lease was lost after the commit): no second announcement.
    with h.container.db.read() as conn:
        task_job = job_store.get_by_key(conn, task["key"])
    assert task_job is not None
    spec = build_registry(h.container).get("task")
    assert spec is not None
    spec.fn(
        JobContext(
            job_id=task_job["id"],
            key=task_job["key"],
            kind="task",
            payload=task_job["payload"],
            attempt=2,
            contact_id=task_job["contact_id"],
            enrollment_id=None,
            now=clock.now(),
        )
    )
    asyncio.run(build_job_worker(h.container).drain())
    with h.container.db.read() as conn:
        assert len(task_store.search(conn)) == 1
        assert len(job_store.search(conn, kind="webhook")) == 2
    assert len(receiver.received) == 2
