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


def test_trusted_proxies_default_to_nobody(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NURTURE_TRUSTED_PROXIES", raising=False)
    assert load_settings().trusted_proxy_list == []


def test_trusted_proxies_accept_addresses_and_networks() -> None:
    s = load_settings(trusted_proxies="127.0.0.1, 10.0.0.0/8 ::1  2001:DB8::/32")
    assert s.trusted_proxy_list == ["127.0.0.1", "10.0.0.0/8", "::1", "2001:db8::/32"]


@pytest.mark.parametrize(
    ("value", "needle"),
    [
        ("*", "'*' would believe X-Forwarded-For from any client"),
        ("nginx.local", "'nginx.local' is not an IP address or network"),
        ("10.0.0.1/8", "'10.0.0.1/8' has host bits set; did you mean 10.0.0.0/8?"),
        ("10.0.0.0/33", "'10.0.0.0/33' is not an IP address or network"),
    ],
)
def test_trusted_proxies_refuse_what_uvicorn_would_silently_ignore(
    monkeypatch: pytest.MonkeyPatch, value: str, needle: str
) -> None:
    monkeypatch.setenv("NURTURE_TRUSTED_PROXIES", value)
    with pytest.raises(ConfigError) as err:
        load_settings()
    assert "NURTURE_TRUSTED_PROXIES" in str(err.value)
    assert needle in str(err.value)
