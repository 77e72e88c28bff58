"""Sequences through the long-running worker at a time scale of a day per second, the rules'
``enroll``/``exit`` actions, and ``nurture simulate``."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from nurture.bootstrap import build_job_worker, build_processor
from nurture.cli.main import app
from nurture.clock import VirtualClock
from nurture.config import Settings
from nurture.pack import DEFAULTS_DIR
from nurture.runtime import Waker, Worker
from nurture.schema.tables import enrollments, messages
from nurture.testing import harness, new_secret, signed_json, standard_request

FORMS_SECRET = new_secret()
TRACK_SECRET = new_secret()


@pytest.mark.slow
def test_whole_christmas_sequence_through_the_real_worker_at_a_day_per_second(
    make_settings: Callable[..., Settings],
) -> None:
    settings = make_settings(
        forms_secret=FORMS_SECRET,
        automation_dir=DEFAULTS_DIR,
        dry_run=True,
        time_scale=86_400,
        worker_poll_seconds=0.05,
        job_max_idle_seconds=0.2,
    )
    with harness(settings) as h:  # the system clock: real time, scaled delays
        body = {
            "email": "ann@example.com",
            "first_name": "Ann",
            "assessment_score": 40,
            "red_systems": 3,
        }
        raw, headers = standard_request(FORMS_SECRET, body, h.clock.now())
        r = h.client.post("/webhooks/forms/christmas-assessment", content=raw, headers=headers)
        assert r.status_code == 202, r.text
        c = h.container

        def sent() -> list[str]:
            with c.db.read() as conn:
                rows = conn.execute(
                    select(messages.c.template)
                    .where(messages.c.status == "sent")
                    .order_by(messages.c.sent_at, messages.c.id)
                )
                return [row.template for row in rows]

        async def run() -> None:
            stop = asyncio.Event()
            waker = Waker()
            worker = Worker(c, build_processor(c), waker, [build_job_worker(c).run])
            task = asyncio.create_task(worker.run(stop))
            try:
                # 264 h at a day per second is 11 s; the bound only stops a broken run.
                for _ in range(600):
                    if len(await asyncio.to_thread(sent)) >= 7:
                        break
                    await asyncio.sleep(0.1)
            finally:
                stop.set()
                await task

        asyncio.run(run())
        assert sent() == [
            "christmas_email_1",
            "christmas_email_2_critical",
            "christmas_email_3",
            "christmas_email_4",
            "christmas_email_5",
            "christmas_email_6",
            "christmas_email_7_critical",
        ]
        with c.db.read() as conn:
            [row] = conn.execute(select(enrollments)).mappings().all()
        assert row["status"] == "completed"


RULES = """
rules:
  - id: vip-drip
    on: custom.vip
    do:
      - enroll: welcome
  - id: stop-all
    on: custom.stop
    do:
      - exit: all
  - id: bad-target
    on: custom.typo
    do:
      - enroll: no-such-sequence
"""
SEQUENCES = """
sequences:
  - id: welcome
    reentry: never
    steps:
      - {id: hello, at: 0h, send_email: thank_you}
      - {id: later, at: 48h, send_email: thank_you, if: 'contact.score >= 0'}
      - {id: much-later, at: 96h, send_email: thank_you}
"""


def test_rule_enroll_and_exit_actions(
    make_settings: Callable[..., Settings], clock: VirtualClock, tmp_path: Path
) -> None:
    (tmp_path / "rules.yaml").write_text(RULES)
    (tmp_path / "sequences.yaml").write_text(SEQUENCES)
    settings = make_settings(track_secret=TRACK_SECRET, automation_dir=tmp_path, dry_run=True)
    with harness(settings, clock) as h:
        worker = build_job_worker(h.container)

        def post(kind: str) -> None:
            payload = {
                "id": uuid.uuid4().hex,
                "type": kind,
                "contact": {"email": "bo@example.com"},
                "data": {},
            }
            body, headers = signed_json(TRACK_SECRET, payload, clock.now())
            assert (
                h.client.post("/webhooks/track", content=body, headers=headers).status_code == 202
            )
            h.process()
            asyncio.run(worker.drain())

        post("custom.vip")
        clock.advance(timedelta(hours=50))
        asyncio.run(worker.drain())
        post("custom.stop")
        post("custom.vip")  # reentry: never
        post("custom.typo")
        clock.advance(timedelta(days=10))
        asyncio.run(worker.drain())
        with h.container.db.read() as conn:
            rows = conn.execute(select(enrollments)).mappings().all()
            steps = conn.execute(select(messages.c.step_id)).scalars().all()
        [row] = rows
        assert row["status"] == "exited" and row["end_reason"] == "rule stop-all"
        assert row["rule_id"] == "vip-drip"
        assert steps == ["hello", "later"]
        timeline = h.client.get("/api/v1/sequences", headers={}).status_code
        assert timeline == 401


def test_simulate_prints_the_timeline_and_sends_nothing(tmp_path: Path) -> None:
    events = [
        {
            "at": "2026-11-23T09:00:00Z",
            "type": "form.submitted",
            "data": {"form": "christmas-assessment", "assessment_score": 55, "red_systems": 1},
        },
        {
            "at": "+30h",
            "type": "booking.created",
            "data": {"booking_uid": "bk_1", "start_time": "2026-11-25T17:00:00+00:00"},
        },
        {
            "at": "+32h",
            "type": "booking.rescheduled",
            "data": {
                "booking_uid": "bk_2",
                "previous_booking_uid": "bk_1",
                "start_time": "2026-11-28T17:00:00+00:00",
            },
        },
    ]
    (tmp_path / "events.json").write_text(json.dumps(events))
    (tmp_path / "contact.json").write_text(
        json.dumps({"email": "ann@example.com", "first_name": "Ann", "time_zone": "Europe/Paris"})
    )
    result = CliRunner().invoke(
        app,
        [
            "simulate",
            "--events",
            str(tmp_path / "events.json"),
            "--contact",
            str(tmp_path / "contact.json"),
            "--until",
            "10d",
        ],
        env={"NURTURE_AUTOMATION_DIR": str(DEFAULTS_DIR), "NURTURE_OUTBOX_DIR": str(tmp_path)},
    )
    assert result.exit_code == 0, result.output
    out = result.output
    assert "SENT e-mail christmas_email_1 to ann@example.com" in out
    assert "SENT e-mail christmas_email_2_urgent" in out
    assert "christmas-2025 enrollment 1 exited: event booking.created; 5 pending step(s)" in out
    assert "prep-guide   SKIPPED (past: due" in out  # a meeting 32 h away gets no 72 h guide
    assert "pre-call enrollment 2 rescheduled (bk_1 -> bk_2)" in out
    assert "SENT e-mail precall_72h" in out  # the new time is far enough for the guide
    assert out.count("SENT e-mail precall_") == 3
    assert "dry run: none was" in out
    assert not list(tmp_path.glob("*.eml"))  # nothing reached even the console outbox

    bad = CliRunner().invoke(app, ["simulate", "--events", str(tmp_path / "missing.json")])
    assert bad.exit_code == 1 and "missing.json" in bad.output
