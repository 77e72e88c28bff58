"""Typed settings, read once at the edge (CLI start-up) and passed down.

Nothing else in nurture reads the environment: a test builds a ``Settings`` by hand.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from nurture.errors import ConfigError


def normalise_database_url(url: str) -> str:
    """Accept the URLs users write (``postgresql://``, ``postgres://``); pin psycopg 3."""
    url = url.strip()
    if url.startswith("postgres://"):
        url = "postgresql://" + url[len("postgres://") :]
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url[len("postgresql://") :]
    if not re.match(r"^(sqlite|postgresql\+psycopg)://", url):
        raise ValueError("must start with sqlite:/// or postgresql://")
    return url


def parse_trusted_proxies(value: str) -> list[str]:
    """``NURTURE_TRUSTED_PROXIES``: addresses or networks, comma- or space-separated.

    uvicorn would take a malformed entry as a literal host name that never matches, so a typo
    silently trusted nobody (or, with ``*``, everybody); here each entry must be an IP address
    or a network without host bits.
    """
    out = []
    for item in value.replace(",", " ").split():
        if item == "*":
            raise ValueError(
                "'*' would believe X-Forwarded-For from any client; list the proxies' addresses"
            )
        try:
            if "/" not in item:
                out.append(str(ipaddress.ip_address(item)))
                continue
            loose = ipaddress.ip_network(item, strict=False)
        except ValueError:
            raise ValueError(f"{item!r} is not an IP address or network") from None
        if loose.network_address != ipaddress.ip_address(item.split("/", 1)[0]):
            raise ValueError(f"{item!r} has host bits set; did you mean {loose}?")
        out.append(str(loose))
    return out


class Settings(BaseSettings):
    """Every ``NURTURE_*`` variable nurture understands."""

    model_config = SettingsConfigDict(env_prefix="NURTURE_", extra="ignore", frozen=True)

    database_url: str = "sqlite:///./nurture.db"
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)
    automation_dir: Path | None = None
    secret_key: str = ""
    time_scale: float = Field(default=1.0, gt=0)
    log_level: str = "INFO"
    db_busy_timeout_ms: int = Field(default=10_000, ge=0)
    # PostgreSQL ends the sessions of a process that vanished (power cut, network cut) after
    # this long, releasing its locks; 0 leaves it to the server's defaults (about two hours).
    db_dead_client_seconds: float = Field(default=60.0, ge=0)

    # Reverse proxies whose X-Forwarded-For / X-Forwarded-Proto are believed (IPs or CIDR
    # networks); empty: none, the client address is the peer of the TCP connection.
    trusted_proxies: str = ""
    # On SIGTERM, how long in-flight HTTP requests may take before they are cut off.
    shutdown_grace_seconds: int = Field(default=20, ge=0, le=3600)

    # Inbound
    max_body_bytes: int = Field(default=1024 * 1024, ge=1024)
    max_batch_events: int = Field(default=500, ge=1, le=10_000)
    # POST /api/v1/events?wait=true answers 202 when processing takes longer than this.
    api_wait_seconds: float = Field(default=10.0, gt=0, le=120)
    track_secret: str = ""
    write_keys: str = ""
    cors_origins: str = "*"
    signature_tolerance_seconds: int = Field(default=300, ge=1)
    # Provider sources: each may hold several space-separated secrets (rotation).
    brevo_webhook_token: str = Field(default="", repr=False)
    resend_webhook_secret: str = Field(default="", repr=False)
    calcom_webhook_secret: str = Field(default="", repr=False)
    stripe_webhook_secret: str = Field(default="", repr=False)
    forms_secret: str = Field(default="", repr=False)
    # Other NURTURE_*_SECRET / NURTURE_*_TOKEN variables, by name, for sources an automation
    # folder declares with its own ``secret_env`` (filled by ``load_settings``).
    extra_secrets: dict[str, str] = Field(default_factory=dict, repr=False)

    # Processing
    partitions: int = Field(default=64, ge=1, le=4096)
    process_batch_size: int = Field(default=200, ge=1, le=5000)
    event_max_attempts: int = Field(default=5, ge=1)
    worker_poll_seconds: float = Field(default=1.0, gt=0)

    # Job scheduler
    job_batch_size: int = Field(default=100, ge=1, le=5000)
    job_concurrency: int = Field(default=50, ge=1, le=10_000)
    job_lease_seconds: float = Field(default=60.0, ge=1)
    job_grace_seconds: float = Field(default=30.0, ge=0)
    job_max_idle_seconds: float = Field(default=5.0, gt=0)

    # Delivery (e-mail, SMS, outbound webhooks)
    email_provider: Literal["console", "smtp", "brevo", "resend"] = "console"
    email_from: str = "nurture <nurture@localhost>"
    outbox_dir: Path = Path("./outbox")
    smtp_url: str = Field(default="", repr=False)
    brevo_api_key: str = Field(default="", repr=False)
    resend_api_key: str = Field(default="", repr=False)
    sms_provider: Literal["console", "brevo"] = "console"
    sms_sender: str = "nurture"
    public_url: str = "http://127.0.0.1:8000"
    unsubscribe_mailto: str = ""
    dry_run: bool = False
    # Sends per second per provider, shared by every worker; 0 = the provider's default.
    email_rate_per_second: float = Field(default=0, ge=0)
    sms_rate_per_second: float = Field(default=0, ge=0)
    http_timeout_seconds: float = Field(default=15.0, gt=0)
    # Provider API bases: the documented endpoints unless a proxy (or a local fake) stands in.
    brevo_api_url: str = Field(default="https://api.brevo.com/v3", pattern=r"^https?://")
    resend_api_url: str = Field(default="https://api.resend.com", pattern=r"^https?://")
    # A CA bundle to trust for SMTP TLS instead of the system store (a private relay's CA).
    # Certificate and host-name checks stay on either way.
    smtp_ca_file: Path | None = None
    # Throughput: persistent SMTP connections, and e-mails sent together (one claim commit,
    # one provider batch request, one completion commit per batch).
    smtp_pool_size: int = Field(default=4, ge=1, le=100)
    smtp_messages_per_connection: int = Field(default=100, ge=1, le=100_000)
    email_batch_size: int = Field(default=100, ge=1, le=1000)

    # Retention (docs/retention.md): after how many days old data is thinned out; 0 keeps it
    # forever. Processed events lose their raw payload (the row, its dedupe key and canonical
    # form stay); done and cancelled jobs are deleted (dead ones stay); the outbound delivery log
    # is deleted; timeline rows keep kind, time, rule and event but lose their detail. After
    # the history window the rest goes too: processed events (their dedupe keys with them), their
    # timeline rows, and the score ledger's rows, summed into one row per contact and component.
    retention_raw_days: int = Field(default=30, ge=0, le=36_500)
    retention_job_days: int = Field(default=14, ge=0, le=36_500)
    retention_delivery_days: int = Field(default=30, ge=0, le=36_500)
    retention_timeline_days: int = Field(default=180, ge=0, le=36_500)
    retention_history_days: int = Field(default=365, ge=0, le=36_500)
    # Rows per pruning transaction: each one holds SQLite's write lock, so keep it small.
    retention_batch_size: int = Field(default=500, ge=10, le=10_000)
    # How often the pruning job runs.
    retention_interval_minutes: int = Field(default=60, ge=1, le=10_080)

    # Integrations: the default pack's hot-lead alert posts here (unset: silent). Webhook URLs
    # carry their token, so they are redacted like secrets.
    discord_webhook_url: str = Field(default="", repr=False)
    slack_webhook_url: str = Field(default="", repr=False)

    # Console (/console): sessions end this long after login, or after this long unused.
    console_session_hours: float = Field(default=12.0, gt=0, le=24 * 30)
    console_idle_minutes: float = Field(default=120.0, gt=0)
    # Intake roll-ups and the Inbox are counted in memory and written this often.
    console_flush_seconds: float = Field(default=2.0, gt=0, le=60)
    # How many recent webhook requests the Inbox keeps.
    inbox_keep: int = Field(default=5000, ge=100, le=1_000_000)

    @field_validator("database_url")
    @classmethod
    def _database_url(cls, value: str) -> str:
        return normalise_database_url(value)

    @field_validator("trusted_proxies")
    @classmethod
    def _trusted_proxies(cls, value: str) -> str:
        return " ".join(parse_trusted_proxies(value))

    @property
    def trusted_proxy_list(self) -> list[str]:
        return self.trusted_proxies.split()

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    @property
    def track_secrets(self) -> list[str]:
        return self.track_secret.split()

    @property
    def write_key_list(self) -> list[str]:
        return self.write_keys.split()

    def secret_values(self, env_name: str) -> list[str]:
        """The space-separated secrets of ``NURTURE_X`` (a field, else ``extra_secrets``)."""
        name = env_name.removeprefix("NURTURE_").lower()
        if name in type(self).model_fields and name != "extra_secrets":
            value = getattr(self, name)
            return value.split() if isinstance(value, str) else []
        return self.extra_secrets.get(env_name, "").split()

    @property
    def all_source_secrets(self) -> list[str]:
        """Every source secret, for log redaction (``user:password`` also as its password)."""
        values = [
            self.brevo_webhook_token,
            self.resend_webhook_secret,
            self.calcom_webhook_secret,
            self.stripe_webhook_secret,
            self.forms_secret,
            *self.extra_secrets.values(),
        ]
        out = []
        for secret in " ".join(values).split():
            out.append(secret)
            if ":" in secret:
                out.append(secret.split(":", 1)[1])
        return out


def extra_secret_env(environ: Mapping[str, str]) -> dict[str, str]:
    """``NURTURE_*_SECRET``/``_TOKEN`` variables Settings does not declare (custom sources)."""
    declared = {f"NURTURE_{name.upper()}" for name in Settings.model_fields}
    return {
        k: v
        for k, v in environ.items()
        if k.startswith("NURTURE_")
        and k.endswith(("_SECRET", "_TOKEN", "_URL"))  # _URL: endpoints' url_env (integrations)
        and k not in declared
    }


def load_settings(**overrides: Any) -> Settings:
    """Read the environment once; turn pydantic's errors into one message naming the variables."""
    if "extra_secrets" not in overrides:
        overrides["extra_secrets"] = extra_secret_env(os.environ)
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            field = str(err["loc"][0]) if err["loc"] else "?"
            problems.append(f"NURTURE_{field.upper()}: {err['msg']}")
        raise ConfigError("invalid configuration: " + "; ".join(problems)) from None
