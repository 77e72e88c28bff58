"""``nurture backup`` while ``nurture serve`` takes signed events, then ``nurture restore`` into
a fresh database: every event acknowledged before the backup began is in the restored copy."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from sqlalchemy import create_engine, text

from nurture.config import normalise_database_url
from nurture.database.engine import Database
from nurture.storage import events as event_store
from nurture.testing import free_port, new_secret, signed_json
from tests.conftest import pg_available
from tests.system.serving import wait_ready

pytestmark = pytest.mark.slow
NURTURE = str(Path(sys.executable).parent / "nurture")


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def two_databases(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, str]]:
    """The served database and an empty one to restore into."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'live.db'}", f"sqlite:///{tmp_path / 'restored.db'}"
        return
    base = pg_available()
    server = base.rsplit("/", 1)[0]
    names = [f"nurture_bk_{uuid.uuid4().hex[:10]}" for _ in range(2)]
    admin = create_engine(server + "/postgres", isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        for name in names:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield f"{server}/{names[0]}", f"{server}/{names[1]}"
    finally:
        with admin.connect() as conn:
            for name in names:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


class Load(threading.Thread):
    """Posts signed events one after another; ``acked`` lists those answered 202, in order."""

    def __init__(self, base: str, secret: str) -> None:
        super().__init__(daemon=True)
        self.base, self.secret = base, secret
        self.acked: list[str] = []
        self.stop = threading.Event()
        self.enough = threading.Event()
        self.errors: list[str] = []

    def run(self) -> None:
        with httpx.Client(base_url=self.base, timeout=30) as client:
            n = 0
            while not self.stop.is_set():
                event_id = f"load-{n}"
                event = {
                    "id": event_id,
                    "type": "page.viewed",
                    "contact": {"email": f"load{n % 50}@example.com"},
                    "data": {"n": n},
                }
                body, headers = signed_json(self.secret, event, datetime.now(UTC))
                r = client.post("/webhooks/track", content=body, headers=headers)
                if r.status_code == 202:
                    self.acked.append(event_id)
                else:
                    self.errors.append(f"{r.status_code} {r.text[:200]}")
                if len(self.acked) >= 200:
                    self.enough.set()
                n += 1


def test_backup_during_ingest_restores_every_acknowledged_event(
    two_databases: tuple[str, str], tmp_path: Path
) -> None:
    live, restored = two_databases
    secret = new_secret()
    port = free_port()
    env = {**os.environ, "NURTURE_DATABASE_URL": live, "NURTURE_TRACK_SECRET": secret}
    env["NURTURE_PORT"] = str(port)
    subprocess.run([NURTURE, "migrate"], env=env, check=True, capture_output=True)
    # The access log goes to a file: a pipe nobody reads would fill up and stall the server.
    log = (tmp_path / "serve.log").open("wb")
    proc = subprocess.Popen(
        [NURTURE, "serve"], env=env, cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT
    )
    base = f"http://127.0.0.1:{port}"
    backup_file = tmp_path / "during-load.backup"
    try:
        wait_ready(base, proc)
        load = Load(base, secret)
        load.start()
        assert load.enough.wait(120), load.errors[:3]
        before = list(load.acked)  # acknowledged before the backup began
        done = subprocess.run(
            [NURTURE, "backup", str(backup_file)], env=env, capture_output=True, text=True
        )
        load.stop.set()
        load.join(60)
        assert done.returncode == 0, done.stderr
        assert "backup written to" in done.stdout
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
        finally:
            log.close()
    assert load.errors == []

    back = subprocess.run(
        [NURTURE, "restore", str(backup_file)],
        env={**env, "NURTURE_DATABASE_URL": restored},
        capture_output=True,
        text=True,
    )
    assert back.returncode == 0, back.stderr
    db = Database(normalise_database_url(restored))
    try:
        with db.read() as conn:
            found = event_store.ids_for_keys(conn, [f"track:id:{k}" for k in load.acked])
    finally:
        db.dispose()
    missing = [k for k in before if f"track:id:{k}" not in found]
    assert missing == []
    # Nothing acknowledged after the copy finished can be in it; what it holds is a prefix.
    held = [k for k in load.acked if f"track:id:{k}" in found]
    assert held == load.acked[: len(held)]
