"""The Jobs page in a real browser: replay a dead job, what a viewer may not do, keyboard use."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import update

from nurture.jobs import schedule
from nurture.schema.tables import jobs
from nurture.storage import contacts as contact_store
from nurture.storage import jobs as job_store
from nurture.storage import messages as message_store
from tests.browser.conftest import ADMIN, VIEWER, Server, login, shot, wait_for

pytestmark = pytest.mark.slow


def dead_email_job(server: Server) -> tuple[int, str, str]:
    """A send_email job that died after five attempts; its id, key and recipient."""
    email = f"dead-{uuid.uuid4().hex[:8]}@example.com"
    key = f"test-dead:{email}"
    now = datetime.now(UTC)
    with server.db.begin() as conn:
        contact = contact_store.create(conn, email, now, {"first_name": "Dee"})
        ref = schedule.enqueue(
            conn,
            kind="send_email",
            key=key,
            run_at=now,
            contact_id=contact.id,
            payload={"template": "thank_you", "contact_id": contact.id, "vars": {}},
        )
        conn.execute(
            update(jobs)
            .where(jobs.c.id == ref.id)
            .values(status="dead", attempts=5, last_error="provider said: 503 try later")
        )
    return ref.id, key, email


def job(server: Server, job_id: int) -> dict[str, Any]:
    with server.db.read() as conn:
        row = job_store.get(conn, job_id)
    assert row is not None
    return row


def sent_files(server: Server, email: str) -> list[Path]:
    if not server.outbox.exists():
        return []
    return [p for p in server.outbox.rglob("*.eml") if email in p.read_text(errors="replace")]


def test_replaying_a_dead_job_runs_it_once(page: Any, server: Server, tmp_path: Path) -> None:
    job_id, key, email = dead_email_job(server)
    login(page, ADMIN)
    page.get_by_role("link", name="Jobs", exact=True).click()
    row = page.locator("#job-list tbody tr", has_text=f"#{job_id}")
    assert "provider said: 503 try later" in row.inner_text()
    assert "5" in row.locator("td.num").inner_text()
    shot(page, tmp_path, "jobs-dead")
    row.get_by_role("button", name=f"Replay job {job_id}").click()
    assert "will run again now" in page.get_by_role("status").inner_text()
    wait_for(lambda: job(server, job_id)["status"] == "done")
    done = job(server, job_id)
    assert done["attempts"] == 1
    with server.db.read() as conn:
        message = message_store.get_by_key(conn, key)
    assert message is not None and message["status"] == "sent"
    assert len(wait_for(lambda: sent_files(server, email))) == 1
    # The page of the job says who replayed it.
    page.goto(f"/console/jobs/{job_id}")
    assert page.locator("table.data", has_text="job.retry").get_by_text("user:ada").is_visible()
    shot(page, tmp_path, "job-replayed")


def test_a_viewer_sees_no_actions_and_a_forged_change_is_refused(
    page: Any, server: Server, tmp_path: Path
) -> None:
    job_id, _, _ = dead_email_job(server)
    login(page, VIEWER)
    page.goto("/console/jobs")
    row = page.locator("#job-list tbody tr", has_text=f"#{job_id}")
    assert row.get_by_role("button").count() == 0
    token = page.locator("input[name=csrf]").first.get_attribute("value")
    assert token
    response = page.request.post(f"/console/jobs/{job_id}/retry", form={"csrf": token})
    assert response.status == 403
    assert "only an admin can change anything" in response.text()
    assert job(server, job_id)["status"] == "dead"
    # The refusal is a page too, not a stack trace.
    page.set_content(response.text())
    shot(page, tmp_path, "viewer-refused")


def _interactive(page: Any) -> list[str]:
    handles = page.locator(
        "main a[href], main button, main select, main input:not([type=hidden]), header a, "
        "header button"
    )
    return [h.evaluate("e => e.outerHTML") for h in handles.all() if h.is_visible()]


def _tab_through(page: Any, limit: int = 400) -> set[str]:
    seen: set[str] = set()
    page.locator("body").focus()
    for _ in range(limit):
        page.keyboard.press("Tab")
        html = page.evaluate("document.activeElement ? document.activeElement.outerHTML : ''")
        if html in seen and len(seen) > 3:
            break
        seen.add(html)
    return seen


@pytest.mark.parametrize("path", ["/console", "/console/jobs", "/console/inbox"])
def test_the_keyboard_reaches_every_action(page: Any, server: Server, path: str) -> None:
    dead_email_job(server)
    login(page, ADMIN)
    page.goto(path)
    wanted = _interactive(page)
    assert wanted
    missing = [w for w in wanted if w not in _tab_through(page)]
    assert missing == []


def test_replay_with_the_keyboard_alone(page: Any, server: Server) -> None:
    job_id, _, _ = dead_email_job(server)
    login(page, ADMIN)
    page.goto("/console/jobs")
    target = f"Replay job {job_id}"
    page.locator("body").focus()
    for _ in range(400):
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement.getAttribute('aria-label')") == target:
            break
    else:
        raise AssertionError(f"{target} is not reachable with Tab")
    page.keyboard.press("Enter")
    page.wait_for_url("**/console/jobs?done=retried")
    wait_for(lambda: job(server, job_id)["status"] == "done")
