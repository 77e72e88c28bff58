"""Changes through the console: CSRF, roles, audit, and bad input (SQLite and PostgreSQL)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from unittest import mock

from sqlalchemy import update
from starlette.testclient import TestClient

from nurture.errors import StorageUnavailable
from nurture.jobs import schedule
from nurture.schema.tables import jobs
from nurture.storage import audit
from nurture.storage import jobs as job_store
from nurture.testing import Harness
from tests.e2e.console.conftest import form_token


def dead_job(h: Harness, key: str = "console:test") -> int:
    now = h.clock.now()
    with h.container.db.begin() as conn:
        ref = schedule.enqueue(
            conn, kind="send_email", key=key, run_at=now, payload={"template": "thank_you"}
        )
        conn.execute(
            update(jobs)
            .where(jobs.c.id == ref.id)
            .values(status="dead", attempts=5, last_error="boom <b>bold</b>")
        )
    return ref.id


def status_of(h: Harness, job_id: int) -> str:
    with h.container.db.read() as conn:
        row = job_store.get(conn, job_id)
    assert row is not None
    return str(row["status"])


def test_admin_replays_a_dead_job_and_the_audit_log_says_who(
    h: Harness, as_admin: TestClient
) -> None:
    job_id = dead_job(h)
    page = as_admin.get("/console/jobs")
    assert "boom &lt;b&gt;bold&lt;/b&gt;" in page.text
    r = as_admin.post(
        f"/console/jobs/{job_id}/retry",
        data={"csrf": form_token(page.text), "back": "list"},
        follow_redirects=False,
    )
    assert r.status_code == 303
    assert r.headers["location"] == "/console/jobs?done=retried"
    assert status_of(h, job_id) == "scheduled"
    with h.container.db.read() as conn:
        entry = audit.recent(conn, target_kind="job", target_id=str(job_id))[0]
    assert entry["actor"] == "user:ada"
    assert entry["action"] == "job.retry"
    assert entry["detail"]["was"] == "dead"
    assert entry["client_addr"] == "testclient"
    # A second replay of a job that is no longer dead is a 409 page, and changes nothing.
    r = as_admin.post(f"/console/jobs/{job_id}/retry", data={"csrf": form_token(page.text)})
    assert r.status_code == 409
    assert "only dead or failed jobs can be retried" in r.text


def test_admin_cancels_a_job(h: Harness, as_admin: TestClient) -> None:
    job_id = dead_job(h)
    page = as_admin.get(f"/console/jobs/{job_id}")
    r = as_admin.post(f"/console/jobs/{job_id}/cancel", data={"csrf": form_token(page.text)})
    assert r.status_code == 200
    assert "The job is cancelled" in r.text
    assert status_of(h, job_id) == "cancelled"


def test_a_post_without_or_with_a_wrong_csrf_token_changes_nothing(
    h: Harness, as_admin: TestClient
) -> None:
    job_id = dead_job(h)
    for data in ({}, {"csrf": ""}, {"csrf": "not-the-token"}):
        r = as_admin.post(f"/console/jobs/{job_id}/retry", data=data)
        assert r.status_code == 403
        assert "security token" in r.text
    page = as_admin.get("/console/jobs")
    r = as_admin.post(
        f"/console/jobs/{job_id}/retry",
        data={"csrf": form_token(page.text)},
        headers={"origin": "https://evil.example"},
    )
    assert r.status_code == 403
    assert status_of(h, job_id) == "dead"


def test_a_viewer_cannot_change_anything(h: Harness, as_viewer: TestClient) -> None:
    job_id = dead_job(h)
    page = as_viewer.get("/console/jobs")
    assert "Replay job" not in page.text
    for action in ("retry", "cancel"):
        r = as_viewer.post(f"/console/jobs/{job_id}/{action}", data={"csrf": form_token(page.text)})
        assert r.status_code == 403
        assert "vic is a viewer" in r.text
    assert status_of(h, job_id) == "dead"


def test_missing_things_are_404_pages(h: Harness, as_admin: TestClient) -> None:
    for path in (
        "/console/jobs/999999",
        "/console/jobs/abc",
        "/console/inbox/424242",
        "/console/nowhere",
    ):
        r = as_admin.get(path)
        assert r.status_code == 404, path
        assert r.headers["content-type"].startswith("text/html")
        assert "Not found" in r.text
        assert "Traceback" not in r.text
    page = as_admin.get("/console")
    r = as_admin.post("/console/jobs/999999/retry", data={"csrf": form_token(page.text)})
    assert r.status_code == 404


def test_a_database_that_cannot_take_the_write_changes_nothing(
    h: Harness, as_admin: TestClient
) -> None:
    job_id = dead_job(h)
    page = as_admin.get("/console/jobs")
    db = h.container.db
    real_begin = db.begin

    @contextmanager
    def locked() -> Iterator[object]:
        raise StorageUnavailable("database unavailable: database is locked")
        yield  # pragma: no cover

    with mock.patch.object(db, "begin", locked):
        r = as_admin.post(f"/console/jobs/{job_id}/retry", data={"csrf": form_token(page.text)})
    assert db.begin == real_begin
    assert r.status_code == 503
    assert "Nothing was changed" in r.text
    assert r.headers["retry-after"] == "1"
    assert status_of(h, job_id) == "dead"


def test_every_console_answer_carries_the_security_headers(
    h: Harness, as_viewer: TestClient
) -> None:
    for path in (
        "/console",
        "/console/login",
        "/console/jobs",
        "/console/static/console.css",
        "/console/nowhere",
    ):
        r = as_viewer.get(path)
        csp = r.headers["content-security-policy"]
        assert "frame-ancestors 'none'" in csp
        assert "script-src 'self'" in csp and "unsafe-inline" not in csp
        assert r.headers["x-content-type-options"] == "nosniff"
        assert r.headers["x-frame-options"] == "DENY"
    assert as_viewer.get("/console").headers["cache-control"] == "no-store"
    # The rest of the app is untouched.
    assert "content-security-policy" not in h.client.get("/healthz").headers


def test_pages_name_no_third_party_host(h: Harness, as_admin: TestClient) -> None:
    dead_job(h)
    for path in ("/console", "/console/jobs", "/console/inbox", "/console/login"):
        html = as_admin.get(path).text
        for attr in ('src="http', "src='http", 'href="http', "href='//", 'src="//'):
            assert attr not in html, (path, attr)
