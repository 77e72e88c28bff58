"""The backup timer and service that ``deploy/systemd`` ships: valid for systemd, and the
command they run makes timestamped backups and rotates them."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
UNITS = ROOT / "deploy" / "systemd"
SHIPPED_BINARY = "/opt/nurture/venv/bin/nurture"
NURTURE = str(Path(sys.executable).parent / "nurture")


def exec_start() -> list[str]:
    [line] = [
        line
        for line in (UNITS / "nurture-backup.service").read_text().splitlines()
        if line.startswith("ExecStart=")
    ]
    return shlex.split(line.removeprefix("ExecStart="))


def test_backup_units_pass_systemd_analyze_verify(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        if os.environ.get("NURTURE_REQUIRE_DEPLOY_TOOLS") == "1":
            pytest.fail("NURTURE_REQUIRE_DEPLOY_TOOLS=1 but systemd-analyze is not installed")
        pytest.skip("systemd-analyze is not installed")
    for name in ("nurture-backup.service", "nurture-backup.timer"):
        text = (UNITS / name).read_text()
        # verify checks that the binary exists; /opt/nurture is not installed here.
        (tmp_path / name).write_text(text.replace(SHIPPED_BINARY, NURTURE))
    done = subprocess.run(
        [analyze, "verify", str(tmp_path / "nurture-backup.timer")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert (done.returncode, done.stdout + done.stderr) == (0, "")


def test_the_shipped_command_backs_up_and_rotates(tmp_path: Path) -> None:
    args = exec_start()
    assert args[0] == SHIPPED_BINARY and args[1:4] == ["backup", "--keep", "14"]
    shelf = tmp_path / "shelf"
    shelf.mkdir()
    old = [shelf / f"nurture-200001{day:02d}T031500Z.sqlite3" for day in range(1, 16)]
    for path in old:
        path.write_bytes(b"an older backup")
    env = {**os.environ, "NURTURE_DATABASE_URL": f"sqlite:///{tmp_path / 'live.db'}"}
    subprocess.run([NURTURE, "migrate"], env=env, check=True, capture_output=True)
    done = subprocess.run(
        [NURTURE, *args[1:-1], str(shelf)], env=env, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    kept = sorted(p.name for p in shelf.iterdir())
    assert len(kept) == 14
    assert kept[:13] == [p.name for p in old[2:]]  # the two oldest went
    assert kept[13].startswith("nurture-2") and kept[13].endswith("Z.sqlite3")
    assert kept[13] > old[-1].name  # today sorts after January 2000
