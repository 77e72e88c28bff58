"""Templates, unsubscribe tokens, SSRF guard, HTTP retry mapping and delivery settings."""

from __future__ import annotations

import asyncio
import email
from datetime import UTC, datetime
from email import policy
from pathlib import Path

import httpx
import pytest

from nurture.bootstrap.delivery import check_settings
from nurture.config import Settings
from nurture.core.channels import OutboundEmail
from nurture.errors import ConfigError, ProviderError, Unauthenticated
from nurture.integrations.outbound import load_endpoints
from nurture.messaging.templates import SAMPLE, TemplateError, TemplateStore, template_store
from nurture.messaging.unsubscribe import list_unsubscribe_headers, make_token, read_token
from nurture.pack import load_pack
from nurture.providers import mime
from nurture.providers.http import check, retry_after
from nurture.providers.recording import RecordingEmail
from nurture.providers.standard.outbound import guard_target, pinned_request, webhook_id


def write(folder: Path, files: dict[str, str]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (folder / name).write_text(text, encoding="utf-8")


@pytest.fixture
def store(tmp_path: Path) -> TemplateStore:
    write(
        tmp_path / "hello",
        {
            "subject.txt": "Hi {{ contact.first_name }} & co\n",
            "body.html": "<p>{{ contact.first_name }} {{ note }}</p>",
            "body.txt": "{{ contact.first_name }} {{ note }}",
        },
    )
    write(tmp_path / "strict", {"subject.txt": "x", "body.txt": "{{ contact.nickname }}"})
    write(
        tmp_path / "needs",
        {"subject.txt": "x", "body.txt": "ok", "meta.yaml": "required: [contact.first_name]\n"},
    )
    write(tmp_path / "evil", {"subject.txt": "x", "body.txt": "{{ ''.__class__.__mro__ }}"})
    return TemplateStore([tmp_path])


def test_html_is_escaped_text_and_subject_are_not(store: TemplateStore) -> None:
    out = store.render("hello", {"contact": {"first_name": "Ann"}, "note": "<b>&</b>"})
    assert out.subject == "Hi Ann & co"
    assert out.html == "<p>Ann &lt;b&gt;&amp;&lt;/b&gt;</p>"
    assert out.text == "Ann <b>&</b>"


def test_undefined_variable_fails_naming_it(store: TemplateStore) -> None:
    with pytest.raises(TemplateError, match=r"strict/body.txt: undefined variable: .*nickname"):
        store.render("strict", {"contact": {"first_name": "Ann"}})


def test_required_variables_are_checked(store: TemplateStore) -> None:
    with pytest.raises(TemplateError, match=r"required variable.*contact\.first_name"):
        store.render("needs", {"contact": {"first_name": ""}})
    assert store.render("needs", {"contact": {"first_name": "Ann"}}).text == "ok"


def test_sandbox_refuses_unsafe_attributes(store: TemplateStore) -> None:
    with pytest.raises(TemplateError, match=r"evil/body\.txt"):
        store.render("evil", {})


def test_unknown_and_invalid_names(store: TemplateStore) -> None:
    with pytest.raises(TemplateError, match="not found"):
        store.render("missing", {})
    with pytest.raises(TemplateError, match="not valid"):
        store.render("../etc", {})


def test_default_pack_templates_render_and_check() -> None:
    templates = template_store(load_pack(None, cwd=Path("/nonexistent")))
    assert {"thank_you", "vip_offer", "recommendations"} <= set(templates.names())
    for name in templates.names():
        assert templates.check(name) == [], name
    thanks = templates.render("thank_you", SAMPLE)
    assert thanks.subject == "Merci pour votre achat!"
    assert "A-1001" in (thanks.text or "") and "120.00 EUR" in (thanks.text or "")
    assert templates.render("vip_offer", SAMPLE).subject.startswith("Offre VIP exclusive")
    recos = templates.render("recommendations", SAMPLE)
    assert "Crémant d&#39;Alsace" in (recos.html or "")
    assert "- Riesling Grand Cru (l'accord parfait" in (recos.text or "")
    without = {k: v for k, v in SAMPLE.items() if k != "recommendations"}
    with pytest.raises(TemplateError, match="recommendations"):
        templates.render("recommendations", without)


def test_unsubscribe_token_round_trip_and_tampering() -> None:
    token = make_token("k1", 42)
    assert read_token("k1", token) == 42
    for bad in (make_token("k2", 42), token.replace("42.", "43.", 1), "42", "x.y", ""):
        with pytest.raises(Unauthenticated):
            read_token("k1", bad)


def test_list_unsubscribe_headers() -> None:
    h = list_unsubscribe_headers("https://x.test/u/t", "unsub@x.test")
    assert (
        h["List-Unsubscribe"] == "<https://x.test/u/t>, <mailto:unsub@x.test?subject=unsubscribe>"
    )
    assert h["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"


def test_mime_has_both_parts_and_deterministic_message_id() -> None:
    msg = OutboundEmail(
        message_id=1,
        key="seq:1:email-1",
        to="ann@example.com",
        to_name="Anné",
        sender="Shop <shop@example.com>",
        subject="Offre spéciale été",
        html="<p>é</p>",
        text="é",
        headers={"List-Unsubscribe": "<https://x.test/u/t>"},
    )
    now = datetime(2026, 1, 1, tzinfo=UTC)
    raw = mime.render(msg, now)
    raw.decode("ascii")  # 7-bit clean: RFC 2047 headers, quoted-printable bodies
    assert b"Subject: Offre =?utf-8?" in raw
    parsed = email.message_from_bytes(raw, policy=policy.default)
    assert parsed["Subject"] == "Offre spéciale été"
    assert parsed.get_content_type() == "multipart/alternative"
    assert [p.get_content_type() for p in parsed.iter_parts()] == ["text/plain", "text/html"]
    assert parsed["Message-ID"] == mime.message_id_for(msg.key, msg.sender)
    assert parsed["Message-ID"].endswith("@example.com>")
    assert mime.file_name("a:b/c") != mime.file_name("a_b_c")


@pytest.mark.parametrize(
    ("status", "headers", "permanent", "after"),
    [
        (429, {"retry-after": "7"}, False, 7.0),
        (503, {}, False, None),
        (400, {}, True, None),
        (401, {}, True, None),
        (
            429,
            {
                "retry-after": "Wed, 21 Oct 2026 07:28:30 GMT",
                "date": "Wed, 21 Oct 2026 07:28:00 GMT",
            },
            False,
            30.0,
        ),
    ],
)
def test_http_status_mapping(
    status: int, headers: dict[str, str], permanent: bool, after: float | None
) -> None:
    response = httpx.Response(status, headers=headers, text="nope")
    with pytest.raises(ProviderError) as info:
        check(response, "p")
    assert info.value.permanent is permanent
    assert info.value.retry_after == after
    assert retry_after(response) == after


def test_ssrf_guard_refuses_private_and_loopback_addresses() -> None:
    asyncio.run(_ssrf_cases())


async def _ssrf_cases() -> None:
    for url in (
        "http://127.0.0.1:8080/hook",
        "http://10.1.2.3/x",
        "http://169.254.169.254/latest/meta-data",
        "http://[::1]/x",
        "http://192.168.0.10/",
    ):
        with pytest.raises(ProviderError, match="private or loopback") as info:
            await guard_target(url, allow_private=False)
        assert info.value.permanent
    assert await guard_target("http://127.0.0.1:8080/hook", allow_private=True) is None
    assert await guard_target("https://93.184.215.14/hook", allow_private=False) == "93.184.215.14"
    with pytest.raises(ProviderError, match="not an http"):
        await guard_target("file:///etc/passwd", allow_private=True)


def test_a_pinned_request_keeps_the_host_and_tls_name() -> None:
    url, host, ext = pinned_request("https://hooks.example.com/a/b?sig=1", "93.184.215.14")
    assert (url, host, ext) == (
        "https://93.184.215.14/a/b?sig=1",
        {"host": "hooks.example.com"},
        {"sni_hostname": "hooks.example.com"},
    )
    url, host, ext = pinned_request("http://u:p@hooks.example.com:8443/x", "2606:2800:21f::1")
    assert (url, host, ext) == (
        "http://u:p@[2606:2800:21f::1]:8443/x",
        {"host": "hooks.example.com:8443"},
        {},
    )


def test_webhook_id_is_stable_per_job_key() -> None:
    assert webhook_id("rule:1:r:0") == webhook_id("rule:1:r:0") != webhook_id("rule:2:r:0")


@pytest.mark.parametrize(
    ("overrides", "names"),
    [
        ({"email_provider": "brevo"}, "NURTURE_BREVO_API_KEY"),
        ({"email_provider": "resend"}, "NURTURE_RESEND_API_KEY"),
        ({"email_provider": "smtp"}, "NURTURE_SMTP_URL"),
        ({"email_provider": "smtp", "smtp_url": "http://x"}, "NURTURE_SMTP_URL"),
        ({"email_provider": "resend", "resend_api_key": "re_x"}, "NURTURE_SECRET_KEY"),
        ({"sms_provider": "brevo"}, "NURTURE_BREVO_API_KEY"),
        ({"public_url": "example.com"}, "NURTURE_PUBLIC_URL"),
    ],
)
def test_provider_without_credentials_is_a_start_up_error(
    overrides: dict[str, str], names: str
) -> None:
    with pytest.raises(ConfigError, match=names):
        check_settings(Settings(**overrides))  # type: ignore[arg-type]


def test_default_settings_are_valid() -> None:
    check_settings(Settings())
    check_settings(Settings(email_provider="brevo", brevo_api_key="k", secret_key="s"))


def test_endpoints_section_is_validated_with_file_and_line(tmp_path: Path) -> None:
    (tmp_path / "endpoints.yaml").write_text(
        "endpoints:\n  - name: flow\n    url: ftp://x\n    secret: whsec_x\n", encoding="utf-8"
    )
    with pytest.raises(ConfigError, match=r"endpoints.yaml:3: 0.url"):
        load_endpoints(load_pack(tmp_path), Settings())
    (tmp_path / "endpoints.yaml").write_text(
        "endpoints:\n  - name: flow\n    url: https://x.test\n"
        "    secret_env: NURTURE_FLOW_SECRET\n",
        encoding="utf-8",
    )
    with pytest.raises(ConfigError, match="NURTURE_FLOW_SECRET to be set"):
        load_endpoints(load_pack(tmp_path), Settings())
    settings = Settings(extra_secrets={"NURTURE_FLOW_SECRET": "whsec_abc"})
    [(name, (endpoint, secret))] = load_endpoints(load_pack(tmp_path), settings).items()
    assert (name, endpoint.url, secret) == ("flow", "https://x.test", "whsec_abc")


def test_dry_run_recording_keeps_only_recent_messages() -> None:
    channel = RecordingEmail(keep=10)
    for i in range(1, 101):
        message = OutboundEmail(
            message_id=i,
            key=f"k{i}",
            to="a@example.com",
            sender="s@example.com",
            subject="s",
            html=None,
            text="t",
        )
        asyncio.run(channel.send(message, uncertain=False))
    assert 10 <= len(channel.sent) <= 20  # bounded, whatever the number sent
    assert channel.sent[-1].message_id == 100
