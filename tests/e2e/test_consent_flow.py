"""Consent of form signups and the double opt-in, end to end: signed form webhook in, the real
processor and job worker, e-mails captured by the recording channel (dry run)."""

from __future__ import annotations

import re
import shutil
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path

import pytest
import yaml

from nurture.clock import VirtualClock
from nurture.config import Settings
from nurture.pack import DEFAULTS_DIR
from nurture.providers.recording import RecordingEmail
from nurture.schema.tables import consents
from nurture.storage import api_keys
from nurture.storage import contacts as contact_store
from nurture.testing import harness
from tests.e2e.test_sequences_flow import API_KEY, AUTH, EMAIL, FORMS_SECRET, Flow


def pack_with_double_opt_in(tmp_path: Path) -> Path:
    folder = tmp_path / "automation"
    shutil.copytree(DEFAULTS_DIR, folder)
    forms = yaml.safe_load((folder / "forms.yaml").read_text())
    forms["forms"][0]["consent"]["double_opt_in"] = True
    (folder / "forms.yaml").write_text(yaml.safe_dump(forms))
    return folder


def make_flow(settings: Settings, clock: VirtualClock) -> Iterator[Flow]:
    with harness(settings, clock) as h:
        with h.container.db.begin() as conn:
            api_keys.create(conn, "consent-e2e", API_KEY, clock.now())
        yield Flow(h, clock)


@pytest.fixture
def doi(
    make_settings: Callable[..., Settings], clock: VirtualClock, tmp_path: Path
) -> Iterator[Flow]:
    folder = pack_with_double_opt_in(tmp_path)
    settings = make_settings(forms_secret=FORMS_SECRET, automation_dir=folder, dry_run=True)
    yield from make_flow(settings, clock)


@pytest.fixture
def plain(make_settings: Callable[..., Settings], clock: VirtualClock) -> Iterator[Flow]:
    settings = make_settings(forms_secret=FORMS_SECRET, automation_dir=DEFAULTS_DIR, dry_run=True)
    yield from make_flow(settings, clock)


def recorded(flow: Flow) -> RecordingEmail:
    spec = flow.worker.registry.get("send_email")
    assert spec is not None
    channel = spec.fn.__self__.email  # type: ignore[attr-defined]  # the bound Delivery
    assert isinstance(channel, RecordingEmail)
    return channel


def consent_rows(flow: Flow) -> list[dict[str, object]]:
    with flow.db.read() as conn:
        return [dict(r) for r in conn.execute(consents.select()).mappings()]


def status(flow: Flow) -> str:
    with flow.db.read() as conn:
        contact = contact_store.load_by_email(conn, EMAIL)
    assert contact is not None
    return contact.status


def test_default_pack_records_consent_and_sends_at_once(plain: Flow) -> None:
    plain.signup()
    plain.run(timedelta(minutes=5))
    [row] = consent_rows(plain)
    assert row["status"] == "given" and row["form_id"] == "christmas-assessment"
    assert str(row["text"]).startswith("By submitting this form you agree")
    assert row["version"] == "2026-11" and row["client_addr"] == "testclient"
    assert row["given_at"] == plain.clock.now() - timedelta(minutes=5)
    assert plain.templates()[:1] == ["christmas_email_1"]  # no double opt-in by default
    assert status(plain) == "subscribed"


def test_double_opt_in_holds_marketing_until_the_link_is_followed(doi: Flow) -> None:
    doi.signup()
    doi.run(timedelta(hours=1))
    # Only the confirmation went out; the contact is pending and in no sequence.
    assert doi.templates() == ["confirm_subscription"]
    assert status(doi) == "pending" and doi.enrollments() == []
    [row] = consent_rows(doi)
    assert row["status"] == "pending"
    [mail] = recorded(doi).to(EMAIL)
    assert mail.text is not None and "List-Unsubscribe" not in mail.headers
    url = re.search(r"https?://\S+/confirm/\S+", mail.text)
    assert url is not None
    path = "/" + url.group(0).split("/", 3)[3]

    # A link preview (GET) shows a button and confirms nothing; a forged token is refused.
    page = doi.h.client.get(path)
    assert page.status_code == 200 and '<form method="post"' in page.text
    forged = path[:-3] + ("AAA" if not path.endswith("AAA") else "BBB")
    assert doi.h.client.post(forged).status_code == 400
    doi.run(timedelta(hours=1))
    assert status(doi) == "pending" and doi.templates() == ["confirm_subscription"]

    r = doi.h.client.post(path)
    assert r.status_code == 200 and "confirmed" in r.text
    assert status(doi) == "subscribed"
    doi.run(timedelta(minutes=5))
    assert doi.templates()[:2] == ["confirm_subscription", "christmas_email_1"]
    [enrollment] = doi.enrollments("christmas-2025")
    assert enrollment["status"] == "active"
    [row] = consent_rows(doi)
    assert row["status"] == "confirmed" and row["confirmed_addr"] == "testclient"

    # A second click changes nothing and starts nothing twice.
    assert doi.h.client.post(path).status_code == 200
    doi.run(timedelta(minutes=5))
    assert doi.templates().count("christmas_email_1") == 1
    assert len(doi.enrollments("christmas-2025")) == 1


def test_an_unconfirmed_contact_gets_no_marketing_from_the_api_either(doi: Flow) -> None:
    doi.signup()
    doi.run(timedelta(minutes=5))
    contact = doi.h.client.get(f"/api/v1/contacts/{EMAIL}", headers=AUTH).json()
    assert contact["status"] == "pending"
    r = doi.h.client.post(
        "/api/v1/sequences/christmas-2025/enroll", json={"email": EMAIL}, headers=AUTH
    )
    assert r.status_code == 201, r.text  # an operator may enrol; the sends still wait
    doi.run(timedelta(hours=2))
    assert doi.templates() == ["confirm_subscription"]
    [enrollment] = doi.enrollments("christmas-2025")
    first = doi.steps(enrollment["id"])["email-1"]
    assert first["status"] == "skipped" and "pending" in (first["reason"] or "")


def test_consent_is_exported_and_erased_with_the_contact(plain: Flow) -> None:
    plain.signup()
    plain.run(timedelta(minutes=5))
    export = plain.h.client.get(f"/api/v1/contacts/{EMAIL}/export", headers=AUTH).json()
    [consent] = export["consents"]
    assert consent["status"] == "given" and consent["client_addr"] == "testclient"
    assert plain.h.client.delete(f"/api/v1/contacts/{EMAIL}", headers=AUTH).status_code == 200
    assert consent_rows(plain) == []
