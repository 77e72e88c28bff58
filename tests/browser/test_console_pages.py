"""The Contacts, Rules and Templates pages in a real browser: the README's signed signup on its
contact page, hostile names, what a viewer may not do, erasure, the keyboard, and a template
preview whose script never runs."""

from __future__ import annotations

import os
import re
import shutil
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest

from nurture.pack import DEFAULTS_DIR
from nurture.storage import audit
from nurture.storage import contacts as contact_store
from nurture.storage import enrollments as enrollment_store
from nurture.testing import new_secret, standard_request
from tests.browser.conftest import (
    ADMIN,
    VIEWER,
    Server,
    keep_copy,
    login,
    shot,
    wait_for,
)
from tests.browser.test_console_jobs import _interactive, _tab_through

pytestmark = pytest.mark.slow

FORMS_SECRET = new_secret()
ROOT = Path(__file__).resolve().parents[2]
# A template whose HTML tries to run script three ways; the preview must run none of them.
HOSTILE = (
    "<!doctype html><html><body><p>Hi {{ contact.first_name }}</p>"
    "<script>document.title = 'ran'; alert('script ran')</script>"
    '<img src="x" onerror="alert(\'onerror ran\')">'
    '<a href="javascript:alert(\'link ran\')" id="js-link">click</a></body></html>'
)


def prepare_server(base: Path) -> dict[str, str]:
    """The built-in pack as the server's automation folder, plus the hostile template."""
    shutil.copytree(DEFAULTS_DIR, base / "automation")
    folder = base / "automation" / "templates" / "hostile_preview"
    folder.mkdir()
    (folder / "subject.txt").write_text("Hostile {{ contact.first_name }}\n")
    (folder / "body.html").write_text(HOSTILE)
    (folder / "body.txt").write_text("Hi {{ contact.first_name }}\n")
    return {"NURTURE_FORMS_SECRET": FORMS_SECRET}


# Chromium reports each script a sandboxed frame refused as a console error: expected here,
# and the proof the script did not run.
SANDBOX_BLOCKED = re.compile(
    r"Blocked script execution|Refused to execute|Refused to load|violates the following Content"
)


@pytest.fixture
def page(browser: Any, server: Server, tmp_path: Path) -> Iterator[Any]:
    """The harness's page, except that refused scripts are collected, not failures."""
    context = browser.new_context(base_url=server.url, viewport={"width": 1280, "height": 900})
    context.set_default_timeout(15_000)
    pg = context.new_page()
    dialogs: list[str] = []
    errors: list[str] = []
    pg.blocked = []  # type: ignore[attr-defined]

    def on_dialog(dialog: Any) -> None:
        dialogs.append(dialog.message)
        dialog.dismiss()

    def on_console(message: Any) -> None:
        if message.type != "error" or message.text.startswith("Failed to load resource"):
            return
        if SANDBOX_BLOCKED.search(message.text):
            pg.blocked.append(message.text)  # type: ignore[attr-defined]
        else:
            errors.append(message.text)

    pg.on("dialog", on_dialog)
    pg.on("console", on_console)
    yield pg
    context.close()
    assert dialogs == [], f"a dialog opened: {dialogs}"
    assert errors == [], f"browser errors: {errors}"


def _email() -> str:
    return f"ann-{uuid.uuid4().hex[:8]}@example.com"


def _signed(server: Server, route: str, secret: str, body: dict[str, Any]) -> None:
    raw, headers = standard_request(secret, body, datetime.now(UTC))
    r = httpx.post(server.url + route, content=raw, headers=headers, timeout=10)
    assert r.status_code == 202, r.text


def _contact_id(server: Server, email: str) -> int | None:
    with server.db.read() as conn:
        return contact_store.id_by_email(conn, email)


def _make(server: Server, email: str, first: str = "Ann", tags: list[str] | None = None) -> int:
    now = datetime.now(UTC)
    with server.db.begin() as conn:
        state = contact_store.create(conn, email, now, {"first_name": first})
        state.tags = list(tags or [])
        contact_store.save(conn, state, now)
    return state.id


def test_the_readme_signup_shows_its_planned_steps_in_the_contacts_time_zone(
    page: Any, server: Server, tmp_path: Path
) -> None:
    email = _email()
    # The README's signed track event (with the person's time zone), then the signed
    # Christmas assessment form.
    _signed(
        server,
        "/webhooks/track",
        server.track_secret,
        {
            "type": "page.viewed",
            "contact": {"email": email, "first_name": "Ann", "time_zone": "America/New_York"},
            "data": {"url": "/pricing"},
        },
    )
    _signed(
        server,
        "/webhooks/forms/christmas-assessment",
        FORMS_SECRET,
        {
            "email": email,
            "first_name": "Ann",
            "business_name": "Ann's Salon",
            "assessment_score": 62,
            "red_systems": 2,
            "weakest_system_1": "Money",
        },
    )

    def enrolled() -> list[dict[str, Any]]:
        cid = _contact_id(server, email)
        if cid is None:
            return []
        with server.db.read() as conn:
            rows = enrollment_store.for_contact(conn, cid)
            return [{**r, "steps": enrollment_store.steps(conn, [r["id"]])[r["id"]]} for r in rows]

    enrollment = wait_for(enrolled)[0]
    assert enrollment["sequence_id"] == "christmas-2025"
    login(page, ADMIN)
    page.get_by_role("link", name="Contacts", exact=True).click()
    page.get_by_label("E-mail or name").fill(email[:10])
    page.get_by_role("button", name="Search").click()
    page.get_by_role("link", name=email).click()
    assert page.get_by_role("heading", level=1).inner_text().startswith(email)
    card = page.locator(f"#enrollment-{enrollment['id']}")
    assert "times in America/New_York" in page.locator("#h-seq").inner_text()
    zone = ZoneInfo("America/New_York")
    cells = card.locator("td.due-local").all_inner_texts()
    assert len(cells) == 7
    for step, cell in zip(enrollment["steps"], cells, strict=True):
        assert cell == step["due_at"].astimezone(zone).strftime("%Y-%m-%d %H:%M %Z")
        assert cell.endswith(("EST", "EDT"))
    assert "Ann's Salon" in page.locator("#h-profile").locator("..").inner_text()
    path = shot(page, tmp_path, "contact")
    if os.environ.get("NURTURE_SCREENSHOTS_DIR"):
        keep_copy(path, Path(os.environ["NURTURE_SCREENSHOTS_DIR"]) / "console-contact.png")


def test_a_hostile_name_is_shown_as_text(page: Any, server: Server, tmp_path: Path) -> None:
    name = "<img src=x onerror=alert(1)>"
    cid = _make(server, _email(), first=name)
    login(page, ADMIN)
    page.goto(f"/console/contacts/{cid}")
    assert page.locator("#h-profile").locator("..").get_by_text(name).is_visible()
    assert page.locator("main img").count() == 0
    page.goto("/console/contacts")
    assert page.locator("#contact-list").get_by_text(name).first.is_visible()
    shot(page, tmp_path, "hostile-name")


def test_a_viewer_cannot_tag_or_erase(page: Any, server: Server, tmp_path: Path) -> None:
    email = _email()
    cid = _make(server, email, tags=["vip"])
    login(page, VIEWER)
    page.goto(f"/console/contacts/{cid}")
    assert page.get_by_role("button", name="Add tag").count() == 0
    assert page.get_by_role("link", name="Erase personal data…").count() == 0
    page.goto(f"/console/contacts/{cid}/erase")
    assert "Only an admin can erase a contact." in page.locator("main").inner_text()
    token = page.locator("input[name=csrf]").first.get_attribute("value")
    for path, form in (
        (f"/console/contacts/{cid}/tags", {"tag": "forged"}),
        (f"/console/contacts/{cid}/erase", {"confirm": email}),
    ):
        response = page.request.post(path, form={"csrf": token, **form})
        assert response.status == 403
        assert "only an admin can change anything" in response.text()
    with server.db.read() as conn:
        row = contact_store.get_row(conn, cid)
    assert row is not None and row["tags"] == ["vip"]
    shot(page, tmp_path, "viewer-erase")


def test_erase_asks_for_confirmation_then_the_contact_is_gone(
    page: Any, server: Server, tmp_path: Path
) -> None:
    email = _email()
    cid = _make(server, email)
    login(page, ADMIN)
    page.goto(f"/console/contacts/{cid}")
    page.get_by_role("link", name="Erase personal data…").click()
    page.wait_for_url(f"**/console/contacts/{cid}/erase")
    shot(page, tmp_path, "erase-confirm")
    page.get_by_role("button", name="Erase personal data").click()
    assert "type it to confirm" in page.locator("#confirm-error").inner_text()
    assert _contact_id(server, email) == cid
    page.get_by_label("to confirm").fill(email)
    page.get_by_role("button", name="Erase personal data").click()
    page.wait_for_url(f"**/console/contacts?erased={cid}")
    notice = page.get_by_role("status").inner_text()
    assert f"Contact #{cid} was erased by user:ada" in notice
    assert _contact_id(server, email) is None
    response = page.goto(f"/console/contacts/{cid}")
    assert response is not None and response.status == 404
    with server.db.read() as conn:
        entry = audit.recent(conn, target_kind="contact", target_id=str(cid))[0]
    assert (entry["action"], entry["actor"]) == ("contact.erase", "user:ada")
    shot(page, tmp_path, "erased")


def test_add_and_remove_a_tag_with_the_keyboard_alone(page: Any, server: Server) -> None:
    cid = _make(server, _email())
    login(page, ADMIN)
    page.goto(f"/console/contacts/{cid}")
    page.locator("body").focus()
    for _ in range(200):
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement.id") == "f-tag":
            break
    else:
        raise AssertionError("the New tag field is not reachable with Tab")
    page.keyboard.type("keyboard-made")
    page.keyboard.press("Enter")
    page.wait_for_url(f"**/console/contacts/{cid}?done=tag_added")
    page.locator("body").focus()
    for _ in range(200):
        page.keyboard.press("Tab")
        label = page.evaluate("document.activeElement.getAttribute('aria-label')")
        if label == "Remove tag keyboard-made":
            break
    else:
        raise AssertionError("the Remove button is not reachable with Tab")
    page.keyboard.press("Space")
    page.wait_for_url(f"**/console/contacts/{cid}?done=tag_removed")
    with server.db.read() as conn:
        row = contact_store.get_row(conn, cid)
    assert row is not None and row["tags"] == []


@pytest.mark.parametrize(
    "path",
    [
        "/console/contacts",
        "/console/contacts/{cid}",
        "/console/contacts/{cid}/erase",
        "/console/sequences",
        "/console/sequences/christmas-2025",
        "/console/rules",
        "/console/templates",
        "/console/templates/christmas_email_1?contact={cid}",
    ],
)
def test_the_keyboard_reaches_every_action(
    page: Any, server: Server, tmp_path: Path, path: str
) -> None:
    cid = _make(server, _email(), tags=["vip", "lead"])
    login(page, ADMIN)
    page.goto(path.format(cid=cid))
    wanted = _interactive(page)
    assert wanted
    missing = [w for w in wanted if w not in _tab_through(page)]
    assert missing == []
    shot(page, tmp_path, re.sub(r"\W+", "-", path.format(cid="id")).strip("-"))


def test_a_rule_dry_run_with_the_keyboard(page: Any, server: Server, tmp_path: Path) -> None:
    email = _email()
    _make(server, email)
    login(page, ADMIN)
    page.goto("/console/rules")
    page.get_by_label("Event (JSON").fill('{"type": "purchase.completed", "data": {"amount": 99}}')
    page.get_by_label("Contact (id or e-mail)").fill(email)
    page.get_by_label("Contact (id or e-mail)").press("Enter")
    decisions = page.locator("#decisions")
    assert "purchase" in decisions.inner_text() and "send_email" in decisions.inner_text()
    shot(page, tmp_path, "rules-dry-run")
    page.get_by_label("Event (JSON").fill("{broken")
    page.get_by_role("button", name="Run the dry run").click()
    assert "not JSON" in page.locator("#f-event-error").inner_text()


def test_template_preview_shows_the_strict_error_and_runs_no_script(
    page: Any, server: Server, tmp_path: Path
) -> None:
    cid = _make(server, _email(), first="Tess")
    login(page, ADMIN)
    page.goto("/console/templates")
    page.get_by_role("link", name="precall_72h").click()
    # Sample data renders; a contact without the booking the template reads is an error.
    assert page.locator("#subject").is_visible()
    page.get_by_label("Contact (id or e-mail)").fill(str(cid))
    page.get_by_role("button", name="Preview").click()
    error = page.locator("#template-error").inner_text()
    assert "undefined variable" in error
    shot(page, tmp_path, "template-error")
    page.goto(f"/console/templates/hostile_preview?contact={cid}")
    frame = page.frame_locator("iframe.preview")
    assert frame.locator("p").first.inner_text() == "Hi Tess"
    frame.locator("#js-link").click()
    assert page.title().startswith("Template hostile_preview")
    assert "Hi Tess" in page.locator("#text").inner_text()
    wait_for(lambda: page.blocked)  # type: ignore[attr-defined]
    shot(page, tmp_path, "template-hostile")
