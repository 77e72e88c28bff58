"""Wiring of the messaging and integrations features: settings in, channels and job handlers out.

Part of the composition root: it is the one place that picks a provider (Brevo, Resend, SMTP,
the console, or the recording channels of a dry run) for each channel port. ``bootstrap``
calls ``check_settings`` at start-up (a provider without its credentials is an error naming
the variable) and ``register`` from ``build_registry``.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from typing import Any

import httpx

from nurture.clock import Clock
from nurture.config import Settings
from nurture.core.channels import EmailChannel, SmsChannel, WebhookChannel
from nurture.database.engine import Database
from nurture.errors import ConfigError
from nurture.integrations.outbound import WEBHOOK_RETRY, Outbound, load_endpoints
from nurture.messaging.deliver import Delivery, DeliveryConfig
from nurture.messaging.ratelimit import limiter_for
from nurture.messaging.templates import template_store
from nurture.messaging.unsubscribe import signing_key
from nurture.pack import Pack, load_pack
from nurture.providers.brevo.sender import BrevoEmail, BrevoSms
from nurture.providers.console.sender import ConsoleEmail, ConsoleSms
from nurture.providers.http import new_client
from nurture.providers.recording import RecordingEmail, RecordingSms, RecordingWebhooks
from nurture.providers.resend.sender import ResendEmail
from nurture.providers.smtp.sender import SmtpEmail, SmtpTarget
from nurture.providers.standard.outbound import WebhookPoster

DRY_RUN_KEEP = 1000  # messages a dry run's recording channels keep in memory

_CREDENTIALS = {
    "smtp": "smtp_url",
    "brevo": "brevo_api_key",
    "resend": "resend_api_key",
}


def check_settings(settings: Settings) -> None:
    """Refuse to start with a provider that cannot work; the message names the variable."""
    field = _CREDENTIALS.get(settings.email_provider)
    if field is not None and not getattr(settings, field):
        raise ConfigError(
            f"NURTURE_EMAIL_PROVIDER={settings.email_provider} needs NURTURE_{field.upper()}"
        )
    if settings.email_provider == "smtp":
        SmtpTarget.parse(settings.smtp_url)
    if settings.smtp_ca_file is not None and not settings.smtp_ca_file.is_file():
        raise ConfigError(f"NURTURE_SMTP_CA_FILE: no such file {settings.smtp_ca_file}")
    if settings.sms_provider == "brevo" and not settings.brevo_api_key:
        raise ConfigError("NURTURE_SMS_PROVIDER=brevo needs NURTURE_BREVO_API_KEY")
    if settings.email_provider != "console" and not settings.secret_key:
        raise ConfigError(
            f"NURTURE_EMAIL_PROVIDER={settings.email_provider} needs NURTURE_SECRET_KEY "
            "(it signs the unsubscribe links every marketing e-mail carries)"
        )
    if not settings.public_url.startswith(("http://", "https://")):
        raise ConfigError("NURTURE_PUBLIC_URL: must start with http:// or https://")


@dataclass
class DeliveryServices:
    delivery: Delivery
    outbound: Outbound
    client: httpx.AsyncClient | None

    async def aclose(self) -> None:
        close = getattr(self.delivery.email, "aclose", None)
        if close is not None:  # pooled SMTP connections
            await close()
        if self.client is not None:
            await self.client.aclose()


def build_delivery(
    settings: Settings,
    db: Database,
    clock: Clock,
    *,
    pack: Pack | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
) -> DeliveryServices:
    check_settings(settings)
    pack = pack or load_pack(settings.automation_dir)
    templates = template_store(pack)
    endpoints = load_endpoints(pack, settings)
    client: httpx.AsyncClient | None = None
    email: EmailChannel
    sms: SmsChannel
    hooks: WebhookChannel
    if settings.dry_run:
        # Every channel records; no HTTP client even exists, so nothing can reach the network.
        # They keep the last messages only: a dry-run campaign must not grow the worker.
        email = RecordingEmail(keep=DRY_RUN_KEEP)
        sms, hooks = RecordingSms(keep=DRY_RUN_KEEP), RecordingWebhooks(keep=DRY_RUN_KEEP)
    else:
        client = new_client(settings.http_timeout_seconds, transport)
        email = _email_channel(settings, client, clock)
        sms = (
            BrevoSms(settings.brevo_api_key, client, settings.brevo_api_url)
            if settings.sms_provider == "brevo"
            else ConsoleSms(settings.outbox_dir)
        )
        hooks = WebhookPoster(client)
    config = DeliveryConfig(
        email_from=settings.email_from,
        public_url=settings.public_url,
        unsubscribe_key=signing_key(settings),
        unsubscribe_mailto=settings.unsubscribe_mailto,
        sms_sender=settings.sms_sender,
        provider_templates=email.name == "brevo",
    )
    email_rate = 0.0 if settings.dry_run else settings.email_rate_per_second
    delivery = Delivery(
        db,
        clock,
        config,
        templates,
        email,
        sms,
        email_limiter=None
        if settings.dry_run
        else limiter_for(db, clock, "email", email.name, email_rate),
        sms_limiter=None
        if settings.dry_run
        else limiter_for(db, clock, "sms", sms.name, settings.sms_rate_per_second),
        batch_size=settings.email_batch_size,
    )
    outbound = Outbound(
        db,
        clock,
        templates,
        hooks,
        endpoints,
        resolve_targets=not settings.dry_run,
        rate_limited=not settings.dry_run,
    )
    return DeliveryServices(delivery, outbound, client)


def _email_channel(settings: Settings, client: httpx.AsyncClient, clock: Clock) -> EmailChannel:
    if settings.email_provider == "smtp":
        tls = None
        if settings.smtp_ca_file is not None:
            tls = ssl.create_default_context(cafile=str(settings.smtp_ca_file))
        return SmtpEmail(
            settings.smtp_url,
            clock,
            timeout=settings.http_timeout_seconds,
            tls_context=tls,
            pool_size=settings.smtp_pool_size,
            max_per_connection=settings.smtp_messages_per_connection,
        )
    if settings.email_provider == "brevo":
        return BrevoEmail(settings.brevo_api_key, client, settings.brevo_api_url)
    if settings.email_provider == "resend":
        return ResendEmail(settings.resend_api_key, client, settings.resend_api_url)
    return ConsoleEmail(settings.outbox_dir, clock)


def register(registry: Any, services: DeliveryServices) -> None:
    """Register the handlers on a ``nurture.jobs.HandlerRegistry``."""
    registry.register("send_email", services.delivery.send_email)
    registry.register("send_sms", services.delivery.send_sms)
    registry.register(
        "webhook",
        services.outbound.send_webhook,
        max_attempts=WEBHOOK_RETRY.max_attempts,
        retry=WEBHOOK_RETRY,
    )
