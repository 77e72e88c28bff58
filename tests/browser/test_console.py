"""The console in a real browser: log in, what the overview shows, what is refused."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from nurture.testing import signed_json
from tests.browser.conftest import ADMIN, VIEWER, Server, login, shot, wait_for

pytestmark = pytest.mark.slow
XSS = "<img src=x onerror=alert(1)>"


def post_signed(server: Server, event: dict[str, Any]) -> httpx.Response:
    body, headers = signed_json(server.track_secret, event, datetime.now(UTC))
    return httpx.post(f"{server.url}/webhooks/track", content=body, headers=headers, timeout=10)


def test_login_shows_the_overview_and_logout_ends_the_session(
    page: Any, server: Server, tmp_path: Path
) -> None:
    page.goto("/console")
    assert "/console/login" in page.url  # not logged in: sent to the login page
    shot(page, tmp_path, "login")
    login(page, ADMIN)
    assert page.get_by_role("heading", name="Overview").is_visible()
    assert page.get_by_text("ada").first.is_visible()
    shot(page, tmp_path, "overview")
    page.get_by_role("button", name="Log out").click()
    page.wait_for_url(re.compile(r".*/console/login$"))
    page.goto("/console")
    assert "/console/login" in page.url


def test_wrong_password_is_refused_next_to_the_form(
    page: Any, server: Server, tmp_path: Path
) -> None:
    page.goto("/console/login")
    page.get_by_label("Name").fill(ADMIN[0])
    page.get_by_role("button", name="Log in").click()
    assert page.locator("#password-error").inner_text() == "Enter your password."
    page.get_by_label("Password").fill("not-the-password")
    page.get_by_role("button", name="Log in").click()
    assert page.get_by_role("alert").inner_text() == "wrong name or password"
    shot(page, tmp_path, "login-refused")


def test_the_readme_signed_event_appears_on_the_overview(
    page: Any, server: Server, tmp_path: Path
) -> None:
    event = {
        "type": "page.viewed",
        "contact": {"email": "ann@example.com", "first_name": "Ann"},
        "data": {"url": "/pricing"},
    }
    assert post_signed(server, event).status_code == 202
    login(page, VIEWER)

    def counted() -> bool:
        page.goto("/console")
        row = page.locator("#sources tbody tr", has_text="track")
        return row.count() == 1 and row.locator("td").first.inner_text().strip() != "0"

    wait_for(counted)
    row = page.locator("#sources tbody tr", has_text="track")
    # The last accepted request: "just now" or "N s ago" depending on how fast the page came.
    last = row.locator("time")
    assert last.inner_text() == "just now" or last.inner_text().endswith(" ago")
    accepted = datetime.fromisoformat(last.get_attribute("datetime"))
    assert abs((datetime.now(UTC) - accepted).total_seconds()) < 120
    shot(page, tmp_path, "overview-signup")


def test_a_post_without_the_csrf_token_is_refused(page: Any, server: Server) -> None:
    login(page, ADMIN)
    # Same browser, same session cookie, but no token: what a forged form would send.
    response = page.request.post("/console/jobs/1/retry", form={"back": "list"})
    assert response.status == 403
    assert "security token" in response.text()
    # An Origin from another site is refused even with the right token.
    page.goto("/console/jobs")
    token = page.locator("input[name=csrf]").first.get_attribute("value")
    response = page.request.post(
        "/console/jobs/1/retry",
        form={"csrf": token},
        headers={"origin": "https://evil.example"},
    )
    assert response.status == 403


def test_a_name_with_markup_shows_as_text_and_opens_no_dialog(
    page: Any, server: Server, tmp_path: Path
) -> None:
    # Stored event whose payload carries the name, and a rejected request to an unknown
    # source named like that: both reach the Inbox.
    event = {"type": "form.submitted", "contact": {"email": "xss@example.com", "first_name": XSS}}
    assert post_signed(server, event).status_code == 202
    refused = httpx.post(
        f"{server.url}/webhooks/generic/{XSS}",
        content=b'{"name": "' + XSS.encode() + b'"}',
        headers={"content-type": "application/json"},
    )
    assert refused.status_code == 404
    login(page, VIEWER)

    def listed() -> bool:
        page.goto("/console/inbox?outcome=rejected")
        return page.locator("#inbox tbody tr", has_text="generic").count() >= 1

    wait_for(listed)
    page.goto("/console/inbox?source=track&outcome=accepted")
    page.locator("#inbox tbody tr").first.get_by_role("link").click()
    assert page.get_by_text(XSS).first.is_visible()  # shown as text in the stored payload
    assert page.locator("img").count() == 0
    shot(page, tmp_path, "inbox-xss")
    page.goto("/console/inbox?outcome=rejected")
    page.locator("#inbox tbody tr", has_text="generic").first.get_by_role("link").click()
    assert page.get_by_text(f"POST /webhooks/generic/{XSS}").is_visible()
    assert page.locator("img").count() == 0
    shot(page, tmp_path, "inbox-rejected")
