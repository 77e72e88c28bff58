"""Logging in and out of the console, sessions, throttling (SQLite and PostgreSQL)."""

from __future__ import annotations

import logging
from datetime import timedelta

import pytest

from nurture.clock import VirtualClock
from nurture.storage import audit
from nurture.testing import Harness
from tests.e2e.console.conftest import ADMIN, VIEWER, form_token, log_in


def test_pages_need_a_login(h: Harness, people: None) -> None:
    for path in ("/console", "/console/jobs", "/console/inbox", "/console/jobs/1"):
        r = h.client.get(path, follow_redirects=False)
        assert r.status_code == 303
        assert r.headers["location"].startswith("/console/login?next=")
    r = h.client.post("/console/jobs/1/retry", data={"csrf": "x"})
    assert r.status_code == 401
    assert "Please log in" in r.text


def test_login_sets_a_hardened_cookie_and_lands_on_next(h: Harness, people: None) -> None:
    page = h.client.get("/console/login?next=/console/jobs")
    r = h.client.post(
        "/console/login",
        data={
            "name": ADMIN[0],
            "password": ADMIN[1],
            "csrf": form_token(page.text),
            "next": "/console/jobs",
        },
        follow_redirects=False,
    )
    assert r.status_code == 303
    assert r.headers["location"] == "/console/jobs"
    cookie = next(c for c in r.headers.get_list("set-cookie") if c.startswith("nurture_session="))
    assert "HttpOnly" in cookie
    assert "SameSite=lax" in cookie
    assert "Path=/console" in cookie
    assert "Secure" not in cookie  # plain HTTP here; https sets it (test below)
    assert h.client.get("/console/jobs").status_code == 200
    with h.container.db.read() as conn:
        entries = audit.recent(conn, target_kind="user", target_id="ada")
    assert [e["action"] for e in entries] == ["console.login", "user.created"]


def test_cookie_is_secure_over_https(h: Harness, people: None) -> None:
    page = h.client.get("https://testserver/console/login")
    r = h.client.post(
        "https://testserver/console/login",
        data={"name": ADMIN[0], "password": ADMIN[1], "csrf": form_token(page.text)},
        follow_redirects=False,
    )
    cookie = next(c for c in r.headers.get_list("set-cookie") if c.startswith("nurture_session="))
    assert "Secure" in cookie


def test_next_never_leaves_the_console(h: Harness, people: None) -> None:
    for target in ("https://evil.example/", "//evil.example", "/console//evil", "/api/v1/jobs"):
        h.client.cookies.clear()
        page = h.client.get("/console/login")
        r = h.client.post(
            "/console/login",
            data={
                "name": VIEWER[0],
                "password": VIEWER[1],
                "csrf": form_token(page.text),
                "next": target,
            },
            follow_redirects=False,
        )
        assert r.headers["location"] == "/console"


def test_wrong_password_and_missing_fields_are_answered_on_the_form(
    h: Harness, people: None, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    page = h.client.get("/console/login")
    r = h.client.post(
        "/console/login", data={"name": "", "password": "", "csrf": form_token(page.text)}
    )
    assert r.status_code == 422
    assert "Enter your user name." in r.text and "Enter your password." in r.text
    r = h.client.post(
        "/console/login",
        data={"name": "ada", "password": "nope-nope-nope", "csrf": form_token(r.text)},
    )
    assert r.status_code == 401
    assert "wrong name or password" in r.text
    assert "nope-nope-nope" not in r.text  # the password is never echoed back
    assert "console login failed" in caplog.text  # logged, with the name only
    assert "nope-nope-nope" not in caplog.text
    r = h.client.post(
        "/console/login",
        data={"name": "nobody", "password": "whatever-long", "csrf": form_token(r.text)},
    )
    assert r.status_code == 401  # same answer for an unknown name


def test_login_form_needs_its_token(h: Harness, people: None) -> None:
    h.client.get("/console/login")
    r = h.client.post("/console/login", data={"name": ADMIN[0], "password": ADMIN[1]})
    assert r.status_code == 403
    h.client.cookies.clear()
    r = h.client.post("/console/login", data={"name": ADMIN[0], "password": ADMIN[1], "csrf": "x"})
    assert r.status_code == 403
    assert "expired" in r.text


def test_failed_logins_are_slowed_down_per_name(h: Harness, people: None) -> None:
    clock = h.clock
    assert isinstance(clock, VirtualClock)
    page = h.client.get("/console/login")
    token = form_token(page.text)
    statuses = []
    for _ in range(7):
        r = h.client.post(
            "/console/login", data={"name": "ada", "password": "wrong-password", "csrf": token}
        )
        token = form_token(r.text)
        statuses.append(r.status_code)
    # Five free failures, the sixth blocks for 1 s, the seventh is refused unchecked.
    assert statuses == [401] * 6 + [429]
    assert r.headers["retry-after"] == "1"
    # Even the right password waits out the block.
    r = h.client.post(
        "/console/login", data={"name": ADMIN[0], "password": ADMIN[1], "csrf": token}
    )
    assert r.status_code == 429
    assert "too many failed logins" in r.text
    clock.advance(timedelta(seconds=2))
    assert log_in(h.client, ADMIN).status_code == 303


def test_logout_ends_the_session_on_the_server(h: Harness, people: None) -> None:
    assert log_in(h.client, VIEWER).status_code == 303
    cookie = h.client.cookies.get("nurture_session")
    page = h.client.get("/console")
    r = h.client.post(
        "/console/logout", data={"csrf": form_token(page.text)}, follow_redirects=False
    )
    assert r.status_code == 303
    # Replaying the old cookie does not work: the session row is gone.
    h.client.cookies.clear()
    h.client.cookies.set("nurture_session", cookie)
    assert h.client.get("/console", follow_redirects=False).status_code == 303


def test_sessions_expire_when_idle_and_at_their_end(h: Harness, people: None) -> None:
    clock = h.clock
    assert isinstance(clock, VirtualClock)
    assert log_in(h.client, VIEWER).status_code == 303
    clock.advance(timedelta(minutes=119))
    assert h.client.get("/console", follow_redirects=False).status_code == 200
    clock.advance(timedelta(minutes=121))  # idle for over two hours
    assert h.client.get("/console", follow_redirects=False).status_code == 303
    assert log_in(h.client, VIEWER).status_code == 303
    for _ in range(13):  # busy all along, yet the 12 h lifetime ends it
        clock.advance(timedelta(hours=1))
        h.client.get("/console", follow_redirects=False)
    assert h.client.get("/console", follow_redirects=False).status_code == 303


def test_a_forged_cookie_is_refused(h: Harness, people: None) -> None:
    assert log_in(h.client, VIEWER).status_code == 303
    token = h.client.cookies.get("nurture_session")
    assert token
    forged = token[:-2] + ("AA" if not token.endswith("AA") else "BB")
    h.client.cookies.clear()
    h.client.cookies.set("nurture_session", forged)
    assert h.client.get("/console", follow_redirects=False).status_code == 303
