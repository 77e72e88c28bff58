"""``nurture up`` as a real process: signed events over real HTTP, the contact back via the API."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from nurture.testing import free_port, new_secret, signed_json
from tests.system.serving import wait_ready

pytestmark = pytest.mark.slow
NURTURE = str(Path(sys.executable).parent / "nurture")


def test_up_serves_signed_events_and_api(tmp_path: Path) -> None:
    secret = new_secret()
    port = free_port()
    env = {
        **os.environ,
        "NURTURE_DATABASE_URL": f"sqlite:///{tmp_path / 'nurture.db'}",
        "NURTURE_TRACK_SECRET": secret,
        "NURTURE_PORT": str(port),
        "NURTURE_WORKER_POLL_SECONDS": "0.2",
    }
    subprocess.run([NURTURE, "migrate"], env=env, check=True, capture_output=True)
    out = subprocess.run(
        [NURTURE, "keys", "create", "system-test"],
        env=env,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    key = out.split()[-1]
    assert key.startswith("nk_")
    proc = subprocess.Popen(
        [NURTURE, "up", "--no-migrate"],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_ready(base, proc)
        events = [
            {
                "id": f"sys-{i}",
                "type": "page.viewed",
                "contact": {"email": "sys@example.com", "first_name": "Sys"},
                "data": {"n": i},
            }
            for i in range(20)
        ]
        with httpx.Client(base_url=base, timeout=10) as client:
            for ev in events:
                body, headers = signed_json(secret, ev, datetime.now(UTC))
                r = client.post("/webhooks/track", content=body, headers=headers)
                assert r.status_code == 202, r.text
            auth = {"authorization": f"Bearer {key}"}
            deadline = time.monotonic() + 20
            processed = 0
            while time.monotonic() < deadline:
                r = client.get("/api/v1/events", params={"status": "processed"}, headers=auth)
                # Derived events (contact.created) are processed too; count what was posted.
                processed = sum(1 for e in r.json()["items"] if e["source"] == "track")
                if processed == 20:
                    break
                time.sleep(0.2)
            assert processed == 20
            contact = client.get("/api/v1/contacts/sys@example.com", headers=auth).json()
            assert contact["first_name"] == "Sys"
            timeline = client.get(f"/api/v1/contacts/{contact['id']}/timeline", headers=auth)
            items = timeline.json()["items"]
            posted = [i for i in items if i["kind"] == "event" and i["detail"]["source"] == "track"]
            assert sorted(i["detail"]["data"]["n"] for i in posted) == list(range(20))
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            _, err = proc.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
    assert proc.returncode == 0, err.decode()[-2000:]
    assert secret.encode() not in err  # secrets never reach the logs
    assert b'"action":"http.request"' in err
