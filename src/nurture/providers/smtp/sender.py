"""SMTP: ``smtp://user:pass@host:port`` (STARTTLS when the server offers it) or ``smtps://``
(implicit TLS). A resend after a crash carries the same deterministic ``Message-ID``.

TLS always verifies the certificate and the host name; ``tls_context`` only changes which CAs are
trusted (``NURTURE_SMTP_CA_FILE`` for a relay with a private CA, a throw-away CA in tests).
"""

from __future__ import annotations

import asyncio
import smtplib
import ssl
from dataclasses import dataclass
from email.utils import parseaddr
from urllib.parse import unquote, urlsplit

from nurture.clock import Clock
from nurture.core.channels import OutboundEmail, SendResult, SendUncertain
from nurture.errors import ConfigError, ProviderError
from nurture.providers import mime


@dataclass(frozen=True)
class SmtpTarget:
    host: str
    port: int
    implicit_tls: bool
    username: str | None
    password: str | None

    @classmethod
    def parse(cls, url: str) -> SmtpTarget:
        parts = urlsplit(url)
        if parts.scheme not in ("smtp", "smtps") or not parts.hostname:
            raise ConfigError(
                "NURTURE_SMTP_URL: expected smtp://user:pass@host:port or smtps://user:pass@host:port"
            )
        implicit = parts.scheme == "smtps"
        try:
            port = parts.port or (465 if implicit else 587)
        except ValueError:
            raise ConfigError("NURTURE_SMTP_URL: the port is not a number") from None
        return cls(
            host=parts.hostname,
            port=port,
            implicit_tls=implicit,
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password else None,
        )


class SmtpEmail:
    name = "smtp"

    def __init__(
        self,
        url: str,
        clock: Clock,
        *,
        timeout: float = 30.0,
        tls_context: ssl.SSLContext | None = None,
    ) -> None:
        self.target = SmtpTarget.parse(url)
        self.clock = clock
        self.timeout = timeout
        self.tls_context = tls_context or ssl.create_default_context()

    async def send(self, message: OutboundEmail, *, uncertain: bool) -> SendResult:
        msg = mime.build(message, self.clock.now())
        await asyncio.to_thread(self._deliver, msg.as_bytes(), message.sender, message.to)
        return SendResult(msg["Message-ID"], "resent_same_message_id" if uncertain else None)

    def _connect(self) -> smtplib.SMTP:
        t = self.target
        if t.implicit_tls:
            return smtplib.SMTP_SSL(t.host, t.port, timeout=self.timeout, context=self.tls_context)
        client = smtplib.SMTP(t.host, t.port, timeout=self.timeout)
        try:
            client.ehlo()
            if client.has_extn("starttls"):
                client.starttls(context=self.tls_context)
                client.ehlo()
        except BaseException:
            client.close()
            raise
        return client

    def _deliver(self, data: bytes, sender: str, to: str) -> None:
        t = self.target
        envelope_from = parseaddr(sender)[1] or sender
        try:
            client = self._connect()
        except ssl.SSLCertVerificationError as exc:
            # Retrying cannot fix a certificate we do not trust; the dead job is retried once
            # the relay's certificate (or NURTURE_SMTP_CA_FILE) is fixed.
            raise ProviderError(
                f"smtp: {t.host}:{t.port} presented a certificate we do not trust: "
                f"{exc.verify_message}",
                permanent=True,
            ) from exc
        except (OSError, smtplib.SMTPException) as exc:
            raise ProviderError(f"smtp: cannot connect to {t.host}:{t.port}: {exc!r}") from exc
        try:
            if t.username is not None:
                try:
                    client.login(t.username, t.password or "")
                except smtplib.SMTPAuthenticationError as exc:
                    raise ProviderError(
                        f"smtp: authentication refused: {exc.smtp_code}", permanent=True
                    ) from exc
                except smtplib.SMTPNotSupportedError as exc:
                    # Credentials are configured but the server offers no AUTH (often: it only
                    # does after TLS, and neither STARTTLS nor smtps:// was used).
                    raise ProviderError(
                        f"smtp: {t.host}:{t.port} offers no AUTH for the configured user",
                        permanent=True,
                    ) from exc
            try:
                client.sendmail(envelope_from, [to], data)
            except smtplib.SMTPRecipientsRefused as exc:
                code = next(iter(exc.recipients.values()))[0]
                raise ProviderError(
                    f"smtp: recipient refused ({code})", permanent=500 <= code < 600
                ) from exc
            except smtplib.SMTPResponseException as exc:
                raise ProviderError(
                    f"smtp: {exc.smtp_code} {exc.smtp_error!r}",
                    permanent=500 <= exc.smtp_code < 600,
                ) from exc
            except (TimeoutError, smtplib.SMTPServerDisconnected, OSError) as exc:
                # The DATA may have been accepted before the connection dropped.
                raise SendUncertain(f"smtp: connection lost while sending: {exc!r}") from exc
        finally:
            try:
                client.quit()
            except (OSError, smtplib.SMTPException):
                client.close()
