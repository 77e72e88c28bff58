"""Provider parsing without I/O: the Brevo dedupe key property, config validation, amounts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from nurture.config import Settings
from nurture.errors import ConfigError, InvalidFields
from nurture.pack import DEFAULTS_DIR, load_pack
from nurture.providers.brevo.inbound import EVENTS, BrevoSource, dedupe_key
from nurture.providers.catalog import build_sources
from nurture.providers.stripe.inbound import major_units

brevo_events = st.fixed_dictionaries(
    {
        "event": st.sampled_from(sorted(EVENTS)),
        "email": st.emails(),
        "message-id": st.text(min_size=1, max_size=40),
        "ts_epoch": st.integers(min_value=1_500_000_000_000, max_value=2_500_000_000_000),
    },
    optional={
        "link": st.text(min_size=1, max_size=40),
        "date": st.text(max_size=20),
        "sending_ip": st.ip_addresses().map(str),
        "tags": st.lists(st.text(max_size=10), max_size=3),
    },
)

IDENTIFYING = ("message-id", "event", "email", "ts_epoch", "link")


@given(brevo_events)
def test_brevo_key_is_stable_across_retries(item: dict[str, Any]) -> None:
    # a retry repeats the event; key order and non-identifying fields (ip, date) may differ
    retry = dict(reversed(list(item.items())))
    retry["sending_ip"] = "203.0.113.9"
    assert dedupe_key(retry) == dedupe_key(item)
    parsed = BrevoSource(["t"]).parse_items(item, legacy=False)[0]
    assert parsed.dedupe_key == dedupe_key(item)


@given(brevo_events, st.sampled_from(IDENTIFYING), st.data())
def test_brevo_key_differs_for_different_events(
    item: dict[str, Any], field: str, data: st.DataObject
) -> None:
    other = dict(item)
    if field == "ts_epoch":
        other[field] = item[field] + data.draw(st.integers(min_value=1, max_value=10**6))
    elif field == "event":
        other[field] = data.draw(st.sampled_from(sorted(set(EVENTS) - {item["event"]})))
    else:
        other[field] = str(item.get(field, "")) + data.draw(st.text(min_size=1, max_size=5))
    assert dedupe_key(other) != dedupe_key(item)


def test_major_units() -> None:
    assert major_units(1999, "usd") == 19.99
    assert major_units(500, "JPY") == 500.0
    assert major_units(1234, "kwd") == 1.234
    assert major_units(None, "usd") is None
    assert major_units(True, "usd") is None


def test_default_pack_builds_every_source() -> None:
    built = build_sources(Settings(), load_pack(DEFAULTS_DIR))
    assert sorted(built.providers) == ["brevo", "calcom", "resend", "stripe"]
    assert list(built.forms) == ["christmas-assessment"]
    assert all(not s.secrets for s in built.providers.values())


def test_form_spec_errors_name_file_line_field(tmp_path: Path) -> None:
    (tmp_path / "forms.yaml").write_text(
        "forms:\n"
        "  - id: signup\n"
        "    fields:\n"
        "      email: {type: email}\n"
        "      age: {type: integer, min: 5, max: 1}\n"
    )
    with pytest.raises(ConfigError) as exc:
        build_sources(Settings(), load_pack(tmp_path))
    assert "forms.yaml:2: 0: " in str(exc.value) or "forms.yaml" in str(exc.value)
    (tmp_path / "forms.yaml").write_text(
        "forms:\n  - id: signup\n    fields:\n      email: {type: emial, required: true}\n"
    )
    with pytest.raises(ConfigError, match=r"forms.yaml:4: 0.fields.email.type"):
        build_sources(Settings(), load_pack(tmp_path))


def test_ip_allowlist_must_be_networks(tmp_path: Path) -> None:
    (tmp_path / "s.yaml").write_text(
        "sources:\n  - type: brevo\n    secret_env: NURTURE_BREVO_WEBHOOK_TOKEN\n"
        "    ip_allowlist: [nope]\n"
    )
    with pytest.raises(ConfigError, match="'nope' is not an IP network"):
        build_sources(Settings(), load_pack(tmp_path))


def test_brevo_legacy_names_only_on_the_legacy_parse() -> None:
    source = BrevoSource(["t"])
    item = {"event": "bounce", "email": "a@b.co", "ts_event": 1}
    assert source.parse_items(item, legacy=True)[0].type == "email.bounced"
    assert source.parse_items(item, legacy=False)[0].type == "brevo.bounce"
    with pytest.raises(InvalidFields):
        source.parse_items([item, {"email": "a@b.co"}], legacy=False)


def test_settings_secret_lookup() -> None:
    s = Settings(
        brevo_webhook_token="tok-old tok-new", extra_secrets={"NURTURE_ACME_SECRET": "acme-1"}
    )
    assert s.secret_values("NURTURE_BREVO_WEBHOOK_TOKEN") == ["tok-old", "tok-new"]
    assert s.secret_values("NURTURE_ACME_SECRET") == ["acme-1"]
    assert s.secret_values("NURTURE_MISSING_SECRET") == []
    assert "tok-old" not in repr(s) and "acme-1" not in repr(s)
