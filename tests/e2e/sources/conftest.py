"""Harness with every provider source configured, and helpers to read what was stored."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any

import pytest
from sqlalchemy import select

from nurture.clock import VirtualClock
from nurture.config import Settings
from nurture.pack import DEFAULTS_DIR
from nurture.schema.tables import events
from nurture.testing import Harness, harness, new_secret

BREVO_TOKEN = "brevo-token-0123456789"
BREVO_BASIC = "brevo:basic-password-42"
RESEND_OLD = new_secret()
RESEND_NEW = new_secret()
CALCOM_SECRET = "calcom-secret-abcdef"
STRIPE_SECRET = "whsec_stripe_test_5f3a9c"
FORMS_SECRET = new_secret()
WRITE_KEY = "wk_forms_browser"

ALL_SECRETS: dict[str, Any] = {
    "brevo_webhook_token": f"{BREVO_TOKEN} {BREVO_BASIC}",
    "resend_webhook_secret": f"{RESEND_OLD} {RESEND_NEW}",
    "calcom_webhook_secret": CALCOM_SECRET,
    "stripe_webhook_secret": STRIPE_SECRET,
    "forms_secret": FORMS_SECRET,
    "write_keys": WRITE_KEY,
}


@pytest.fixture
def make_harness(
    make_settings: Callable[..., Settings], clock: VirtualClock
) -> Iterator[Callable[..., Harness]]:
    """A harness per call (settings overrides); all are closed at the end of the test."""
    opened: list[Any] = []

    def make(**overrides: Any) -> Harness:
        values = {**ALL_SECRETS, "automation_dir": DEFAULTS_DIR, **overrides}
        cm = harness(make_settings(**values), clock)
        opened.append(cm)
        return cm.__enter__()

    yield make
    for cm in reversed(opened):
        cm.__exit__(None, None, None)


@pytest.fixture
def h(make_harness: Callable[..., Harness]) -> Harness:
    return make_harness()


def stored(h: Harness) -> list[dict[str, Any]]:
    """Every inbox row, oldest first."""
    with h.container.db.read() as conn:
        rows = conn.execute(select(events).order_by(events.c.id)).mappings()
        return [dict(r) for r in rows]


def only(h: Harness) -> dict[str, Any]:
    rows = stored(h)
    assert len(rows) == 1, rows
    return rows[0]


def assert_problem(r: Any, status: int, needle: str = "") -> dict[str, Any]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = r.json()
    assert needle in body["detail"], body
    return body


def at(h: Harness) -> datetime:
    return h.clock.now()


def process_all(h: Harness) -> None:
    """Run the processor; every delivered event (not derived ones) ends processed."""
    h.process()
    rows = [r for r in stored(h) if r["source"] != "derived"]
    assert rows and all(r["status"] == "processed" for r in rows), [
        (r["type"], r["status"], r["error"]) for r in rows
    ]
