"""Starting with a bad proxy or shutdown setting: the command names it, exits 1, touches nothing."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from nurture.cli.main import app

runner = CliRunner()


@pytest.mark.parametrize("command", [["up"], ["serve"], ["worker"], ["migrate"], ["check"]])
@pytest.mark.parametrize(
    ("variable", "value", "needle"),
    [
        ("NURTURE_TRUSTED_PROXIES", "nginx", "'nginx' is not an IP address or network"),
        ("NURTURE_TRUSTED_PROXIES", "*", "would believe X-Forwarded-For from any client"),
        ("NURTURE_TRUSTED_PROXIES", "192.168.1.1/24", "did you mean 192.168.1.0/24?"),
        ("NURTURE_SHUTDOWN_GRACE_SECONDS", "-1", "greater than or equal to 0"),
    ],
)
def test_bad_settings_stop_every_command_before_it_touches_the_database(
    tmp_path: Path, command: list[str], variable: str, value: str, needle: str
) -> None:
    database = tmp_path / "nurture.db"
    result = runner.invoke(
        app, command, env={"NURTURE_DATABASE_URL": f"sqlite:///{database}", variable: value}
    )
    assert result.exit_code == 1, result.output
    message = " ".join(result.output.split())
    assert variable in message and needle in message, message
    assert not database.exists()
