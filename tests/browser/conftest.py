"""Browser tests: Playwright for Python driving Debian's Chromium against ``nurture up``.

Nothing is downloaded: the browser is ``/usr/bin/chromium`` (``NURTURE_CHROMIUM`` overrides).
Without it the tests skip, except under CI (``NURTURE_REQUIRE_BROWSER=1``), where they fail.
One ``nurture up`` process serves the whole module (SQLite file, real HTTP, the in-process
worker); each test gets a fresh browser context (no cookies) and its own data.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from nurture.accounts import users
from nurture.database import migrate
from nurture.database.engine import Database
from nurture.testing import free_port, new_secret
from tests.system.serving import wait_ready

CHROMIUM = os.environ.get("NURTURE_CHROMIUM", "/usr/bin/chromium")
REQUIRE = os.environ.get("NURTURE_REQUIRE_BROWSER") == "1"
NURTURE = str(Path(sys.executable).parent / "nurture")
ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-default-apps",
    "--disable-extensions",
]
ADMIN = ("ada", "ada-password-long")
VIEWER = ("vic", "vic-password-long")


def _require_browser() -> None:
    why = None
    if not Path(CHROMIUM).exists():
        why = f"no Chromium at {CHROMIUM} (apt-get install -y chromium)"
    else:
        try:
            import playwright.sync_api  # noqa: F401
        except ImportError:
            why = "playwright is not installed (pip install -e '.[dev]')"
    if why is None:
        return
    if REQUIRE:
        pytest.fail(f"NURTURE_REQUIRE_BROWSER=1 but {why}")
    pytest.skip(why)


# Package scope, not session: Playwright's sync API keeps an event loop running in this thread
# while it is open, and every later test calling ``asyncio.run()`` would fail.
@pytest.fixture(scope="package")
def browser() -> Iterator[Any]:
    _require_browser()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        yield chromium
        chromium.close()


@dataclass
class Server:
    url: str
    db: Database
    track_secret: str
    outbox: Path
    proc: subprocess.Popen[bytes]


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[Server]:
    """A test module may define ``prepare_server(base) -> dict`` to add files to the server's
    folder (its working directory: ``automation/`` there is the automation folder) and
    variables to its environment."""
    _require_browser()
    base = tmp_path_factory.mktemp("console")
    prepare = getattr(request.module, "prepare_server", None)
    extra: dict[str, str] = prepare(base) if prepare is not None else {}
    url = f"sqlite:///{base / 'nurture.db'}"
    db = Database(url)
    migrate.upgrade(db)
    now = datetime.now(UTC)
    for (name, password), role in ((ADMIN, "admin"), (VIEWER, "viewer")):
        users.create_user(db, name=name, role=role, password=password, now=now, actor="test")
    port = free_port()
    secret = new_secret()
    env = {
        **os.environ,
        "NURTURE_DATABASE_URL": url,
        "NURTURE_PORT": str(port),
        "NURTURE_TRACK_SECRET": secret,
        "NURTURE_OUTBOX_DIR": str(base / "outbox"),
        "NURTURE_WORKER_POLL_SECONDS": "0.2",
        "NURTURE_JOB_MAX_IDLE_SECONDS": "0.5",
        "NURTURE_CONSOLE_FLUSH_SECONDS": "0.2",
        "NURTURE_LOG_LEVEL": "WARNING",
        **extra,
    }
    proc = subprocess.Popen(
        [NURTURE, "up", "--no-migrate"],
        env=env,
        cwd=base,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    server_url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(server_url, proc, timeout=120)
        yield Server(server_url, db, secret, base / "outbox", proc)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stderr is not None:
            proc.stderr.close()
        db.dispose()


@pytest.fixture
def page(browser: Any, server: Server, tmp_path: Path) -> Iterator[Any]:
    """A fresh context per test; any dialog (alert, confirm) fails the test."""
    context = browser.new_context(base_url=server.url, viewport={"width": 1280, "height": 900})
    context.set_default_timeout(15_000)
    pg = context.new_page()
    dialogs: list[str] = []

    def on_dialog(dialog: Any) -> None:
        dialogs.append(dialog.message)
        dialog.dismiss()

    pg.on("dialog", on_dialog)
    errors: list[str] = []

    def on_console(message: Any) -> None:
        # A page answered 4xx on purpose logs "Failed to load resource"; assets are checked
        # below. A CSP violation or a failing script is an error here.
        if message.type == "error" and not message.text.startswith("Failed to load resource"):
            errors.append(message.text)

    def on_response(response: Any) -> None:
        if response.request.resource_type != "document" and response.status >= 400:
            errors.append(f"{response.status} {response.url}")

    pg.on("console", on_console)
    pg.on("response", on_response)
    yield pg
    context.close()
    assert dialogs == [], f"a dialog opened: {dialogs}"
    assert errors == [], f"browser errors: {errors}"


def login(page: Any, who: tuple[str, str]) -> None:
    page.goto("/console/login")
    page.get_by_label("Name").fill(who[0])
    page.get_by_label("Password").fill(who[1])
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(re.compile(r".*/console(\?.*)?$"))


def shot(page: Any, tmp_path: Path, name: str) -> Path:
    path = tmp_path / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


def wait_for(check: Any, timeout: float = 15.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.1)


def keep_copy(path: Path, target: Path) -> None:
    """Copy a screenshot somewhere people look (docs/) when NURTURE_SCREENSHOTS_DIR is set."""
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(path, target)
