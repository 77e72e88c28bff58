"""Restarting ``nurture serve`` instances one at a time behind the shipped nginx site loses no
webhook and refuses none: what docs/deploy.md promises for upgrades.

Two instances on one database behind nginx; senders post through nginx over TLS the whole
time; each instance in turn gets SIGTERM (as ``systemctl restart`` sends), drains, exits 0 and
starts again on its port. Every delivery is acknowledged, and every acknowledged event is stored.
"""

from __future__ import annotations

import os
import signal
from contextlib import ExitStack
from pathlib import Path

import pytest

from nurture.testing import free_port, new_secret
from tests.system.serving import WAIT_SECONDS, Load, nginx_in_front_of, nurture_serve
from tests.system.test_graceful_stop import assert_committed

pytestmark = pytest.mark.slow

BACKENDS = ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]


@pytest.fixture(params=BACKENDS)
def url(request: pytest.FixtureRequest) -> str:
    name = "sqlite_url" if request.param == "sqlite" else "pg_url"
    return str(request.getfixturevalue(name))


def test_rolling_restart_behind_nginx_acknowledges_every_delivery(url: str, tmp_path: Path) -> None:
    secret = new_secret()
    env = {
        **os.environ,
        "NURTURE_DATABASE_URL": url,
        "NURTURE_TRACK_SECRET": secret,
        "NURTURE_TRUSTED_PROXIES": "127.0.0.1",
    }
    ports = [free_port(), free_port()]
    with ExitStack() as stack:
        procs = [
            stack.enter_context(nurture_serve(env, tmp_path / f"serve-{p}.log", p))[1]
            for p in ports
        ]
        nginx = stack.enter_context(nginx_in_front_of(ports, tmp_path / "nginx"))
        load = stack.enter_context(Load(nginx.client, secret))
        load.wait_for(100)
        for i, port in enumerate(ports):
            procs[i].send_signal(signal.SIGTERM)
            assert procs[i].wait(timeout=WAIT_SECONDS) == 0
            log = tmp_path / f"serve-{port}-restarted.log"
            procs[i] = stack.enter_context(nurture_serve(env, log, port))[1]
            load.wait_for(len(load.accepted) + 100)
        load.stop()  # before the instances stop at the end
    assert load.failures == []
    assert_committed(url, load.accepted)
