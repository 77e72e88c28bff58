from __future__ import annotations

import pytest

from nurture.config import load_settings, normalise_database_url
from nurture.errors import ConfigError


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("sqlite:///./nurture.db", "sqlite:///./nurture.db"),
        ("postgresql://u@h:5432/db", "postgresql+psycopg://u@h:5432/db"),
        ("postgres://u:p@h/db", "postgresql+psycopg://u:p@h/db"),
        ("postgresql+psycopg://u@h/db", "postgresql+psycopg://u@h/db"),
    ],
)
def test_database_urls_as_users_write_them(given: str, expected: str) -> None:
    assert normalise_database_url(given) == expected


def test_invalid_variables_are_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NURTURE_PORT", "eighty")
    monkeypatch.setenv("NURTURE_DATABASE_URL", "mysql://x")
    with pytest.raises(ConfigError) as err:
        load_settings()
    assert "NURTURE_PORT" in str(err.value)
    assert "NURTURE_DATABASE_URL" in str(err.value)


def test_settings_read_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NURTURE_TRACK_SECRET", "whsec_a whsec_b")
    monkeypatch.setenv("NURTURE_TIME_SCALE", "1440")
    s = load_settings()
    assert s.track_secrets == ["whsec_a", "whsec_b"]
    assert s.time_scale == 1440
