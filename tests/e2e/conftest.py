from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from nurture.clock import VirtualClock
from nurture.config import Settings
from nurture.storage import api_keys
from nurture.testing import Harness, harness, new_secret

TRACK_SECRET = new_secret()
WRITE_KEY = "wk_browser_key"
API_KEY = "nk_test_key_for_e2e"
AUTH = {"authorization": f"Bearer {API_KEY}"}


@pytest.fixture
def h(make_settings: Callable[..., Settings], clock: VirtualClock) -> Iterator[Harness]:
    settings = make_settings(track_secret=TRACK_SECRET, write_keys=WRITE_KEY, max_batch_events=5)
    with harness(settings, clock) as hh:
        with hh.container.db.begin() as conn:
            api_keys.create(conn, "e2e", API_KEY, clock.now())
        yield hh
