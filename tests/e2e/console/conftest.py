from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import pytest
from starlette.testclient import TestClient

from nurture.accounts import users
from nurture.testing import Harness

ADMIN = ("ada", "ada-password-long")
VIEWER = ("vic", "vic-password-long")


def form_token(html: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', html)
    assert found, "no csrf field on the page"
    return found.group(1)


def log_in(client: TestClient, who: tuple[str, str]) -> Any:
    page = client.get("/console/login")
    return client.post(
        "/console/login",
        data={"name": who[0], "password": who[1], "csrf": form_token(page.text)},
        follow_redirects=False,
    )


@pytest.fixture
def people(h: Harness) -> None:
    now = h.clock.now()
    for (name, password), role in ((ADMIN, "admin"), (VIEWER, "viewer")):
        users.create_user(
            h.container.db, name=name, role=role, password=password, now=now, actor="test"
        )


@pytest.fixture
def as_admin(h: Harness, people: None) -> TestClient:
    assert log_in(h.client, ADMIN).status_code == 303
    return h.client


@pytest.fixture
def as_viewer(h: Harness, people: None) -> TestClient:
    assert log_in(h.client, VIEWER).status_code == 303
    return h.client


Flush = Callable[[], int]


@pytest.fixture
def flush(h: Harness) -> Flush:
    tally = h.app.state.nurture.tally
    assert tally is not None
    return tally.flush  # type: ignore[no-any-return]
