"""SMTP: ``smtp://user:pass@host:port`` (STARTTLS when the server offers it) or ``smtps://``
(implicit TLS). A resend after a crash carries the same deterministic ``Message-ID``.

TLS always verifies the certificate and the host name; ``tls_context`` only changes which CAs are
trusted (``NURTURE_SMTP_CA_FILE`` for a relay with a private CA, a throw-away CA in tests).
"""

from __future__ import annotations

import asyncio
import smtplib
import ssl
import threading
import weakref
from concurrent.futures import ThreadPoolExecutor
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


@dataclass(eq=False)
class _Session:
    """One open SMTP connection and how many messages it has carried."""

    client: smtplib.SMTP
    sent: int = 0


class SmtpEmail:
    """A pool of persistent connections to the relay.

    Up to ``pool_size`` messages are in flight at once, each on its own connection (a thread
    each: ``smtplib`` blocks). A connection is reused after ``RSET`` (which also finds a
    connection the server closed while idle: it is replaced before anything is sent on it) and
    closed after ``max_per_connection`` messages, as relays limit messages per session. A drop
    before ``DATA`` was sent means the message was not accepted: it is sent again at once on a
    fresh connection. A drop during or after ``DATA`` is uncertain: the row stays ``sending``
    and the retry resends with the same ``Message-ID``.
    """

    name = "smtp"

    def __init__(
        self,
        url: str,
        clock: Clock,
        *,
        timeout: float = 30.0,
        tls_context: ssl.SSLContext | None = None,
        pool_size: int = 4,
        max_per_connection: int = 100,
    ) -> None:
        self.target = SmtpTarget.parse(url)
        self.clock = clock
        self.timeout = timeout
        self.tls_context = tls_context or ssl.create_default_context()
        self.pool_size = max(1, pool_size)
        self.max_per_connection = max(1, max_per_connection)
        self._idle: list[_Session] = []
        self._lock = threading.Lock()
        self._executor: ThreadPoolExecutor | None = None
        self.connections_opened = 0  # for tests and benchmarks: how often the pool connected
        # A channel dropped without ``close`` (a registry built for one drain) closes its idle
        # sockets when it is collected instead of leaving them to the socket finalizer.
        weakref.finalize(self, _drop_all, self._idle)

    async def send(self, message: OutboundEmail, *, uncertain: bool) -> SendResult:
        data = mime.render(message, self.clock.now())
        envelope_from = parseaddr(message.sender)[1] or message.sender
        if self._executor is None:
            self._executor = ThreadPoolExecutor(self.pool_size, thread_name_prefix="smtp")
        await asyncio.get_running_loop().run_in_executor(
            self._executor, self._deliver, data, envelope_from, message.to
        )
        return SendResult(
            mime.message_id_for(message.key, message.sender),
            "resent_same_message_id" if uncertain else None,
        )

    def close(self) -> None:
        """Quit every idle connection (at shutdown)."""
        with self._lock:
            idle = list(self._idle)
            self._idle.clear()  # the same list object: the finalizer watches it
        for session in idle:
            _quit(session.client)
        if self._executor is not None:
            self._executor.shutdown(wait=False)
            self._executor = None

    async def aclose(self) -> None:
        await asyncio.to_thread(self.close)

    # -- in a pool thread -----------------------------------------------------------------------

    def _deliver(self, data: bytes, envelope_from: str, to: str) -> None:
        session = self._checkout()
        try:
            try:
                self._transaction(session, data, envelope_from, to)
            except _NotSent:
                # The connection died before DATA: nothing was accepted; once more, fresh.
                _quit(session.client)
                session = self._open()
                try:
                    self._transaction(session, data, envelope_from, to)
                except _NotSent as exc:
                    raise ProviderError(
                        f"smtp: connection lost before sending: {exc.__cause__!r}"
                    ) from exc.__cause__
        except SendUncertain:
            _quit(session.client)
            raise
        except ProviderError as exc:
            # The server answered (a refused recipient...): the session itself is fine, unless
            # it announced its end (421) or the error is ours (connection lost before DATA).
            code = exc.smtp_code if isinstance(exc, _Refused) else None
            self._checkin(session, reusable=code is not None and code != 421)
            raise
        except BaseException:
            _quit(session.client)
            raise
        self._checkin(session, reusable=True)

    def _checkout(self) -> _Session:
        with self._lock:
            session = self._idle.pop() if self._idle else None
        if session is None:
            return self._open()
        try:
            code, _ = session.client.rset()
            if code == 250:
                return session
        except (OSError, smtplib.SMTPException):
            pass
        _quit(session.client)  # closed by the server while idle (or confused): replace it
        return self._open()

    def _checkin(self, session: _Session, *, reusable: bool) -> None:
        session.sent += 1
        if not reusable or session.sent >= self.max_per_connection:
            _quit(session.client)
            return
        with self._lock:
            self._idle.append(session)

    def _open(self) -> _Session:
        t = self.target
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
        with self._lock:
            self.connections_opened += 1
        if t.username is None:
            return _Session(client)
        try:
            client.login(t.username, t.password or "")
        except smtplib.SMTPAuthenticationError as exc:
            _quit(client)
            raise ProviderError(
                f"smtp: authentication refused: {exc.smtp_code}", permanent=True
            ) from exc
        except smtplib.SMTPNotSupportedError as exc:
            _quit(client)
            # Credentials are configured but the server offers no AUTH (often: it only does
            # after TLS, and neither STARTTLS nor smtps:// was used).
            raise ProviderError(
                f"smtp: {t.host}:{t.port} offers no AUTH for the configured user", permanent=True
            ) from exc
        except (OSError, smtplib.SMTPException) as exc:
            _quit(client)
            raise ProviderError(f"smtp: login failed: {exc!r}") from exc
        return _Session(client)

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

    @staticmethod
    def _transaction(session: _Session, data: bytes, envelope_from: str, to: str) -> None:
        """One message: MAIL, RCPT, DATA."""
        client = session.client
        try:
            code, reply = client.mail(envelope_from)
            if code != 250:
                raise smtplib.SMTPSenderRefused(code, reply, envelope_from)
            code, reply = client.rcpt(to)
            if code not in (250, 251):
                raise smtplib.SMTPRecipientsRefused({to: (code, reply)})
        except smtplib.SMTPRecipientsRefused as exc:
            code = next(iter(exc.recipients.values()))[0]
            raise _Refused(f"smtp: recipient refused ({code})", code) from exc
        except smtplib.SMTPResponseException as exc:
            raise _Refused(f"smtp: {exc.smtp_code} {exc.smtp_error!r}", exc.smtp_code) from exc
        except (TimeoutError, smtplib.SMTPServerDisconnected, OSError) as exc:
            raise _NotSent() from exc
        try:
            client.data(data)
        except smtplib.SMTPResponseException as exc:
            raise _Refused(f"smtp: {exc.smtp_code} {exc.smtp_error!r}", exc.smtp_code) from exc
        except (TimeoutError, smtplib.SMTPServerDisconnected, OSError) as exc:
            # The DATA may have been accepted before the connection dropped.
            raise SendUncertain(f"smtp: connection lost while sending: {exc!r}") from exc


class _Refused(ProviderError):
    """The server refused this message with a reply code; 5xx is permanent."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message, permanent=500 <= code < 600)
        self.smtp_code = code


class _NotSent(Exception):
    """The connection failed before DATA: the server cannot have accepted the message."""


def _drop_all(idle: list[_Session]) -> None:
    for session in idle:
        session.client.close()
    idle.clear()


def _quit(client: smtplib.SMTP) -> None:
    try:
        client.quit()
    except (OSError, smtplib.SMTPException):
        client.close()
