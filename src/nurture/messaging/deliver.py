"""Sending e-mail and SMS exactly once per job key.

For each ``send_email`` / ``send_sms`` job:

1. check the key, the contact and suppressions (a settled key, an erased contact, a suppressed
   address end the job without sending, recorded on the ``messages`` row);
2. render the template completely, or fail the job naming the variable (nothing is claimed);
3. take a token from the provider's shared rate limit (a ``Retry-After`` from the provider
   pauses that limit for every worker);
4. claim the ``messages`` row (committed) before calling the provider;
5. call the provider; record ``sent`` with the provider's id, or what went wrong.

A crash between 4 and 5 leaves the row ``sending``; the next attempt passes ``uncertain=True``
to the channel, which settles it the provider's way, and the row records how (``settled``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from sqlalchemy import Connection

from nurture.clock import Clock
from nurture.contacts import suppression
from nurture.core.channels import (
    EmailChannel,
    OutboundEmail,
    OutboundSms,
    SendResult,
    SendUncertain,
    SmsChannel,
)
from nurture.core.contacts import ContactState
from nurture.errors import ProviderError
from nurture.messaging.ratelimit import RateLimiter
from nurture.messaging.templates import TemplateError, TemplateStore
from nurture.messaging.unsubscribe import list_unsubscribe_headers, unsubscribe_url
from nurture.storage import contacts as contact_store
from nurture.storage import events as event_store
from nurture.storage import messages as message_store
from nurture.storage.engine import Database

log = logging.getLogger("nurture.deliver")


class JobLike(Protocol):
    """What a handler reads from ``nurture.jobs.JobContext``."""

    @property
    def key(self) -> str: ...

    @property
    def payload(self) -> dict[str, Any]: ...

    @property
    def attempt(self) -> int: ...


@dataclass(frozen=True)
class DeliveryConfig:
    email_from: str
    public_url: str
    unsubscribe_key: str
    unsubscribe_mailto: str = ""
    sms_sender: str = "nurture"
    # Brevo can render its own templates (meta.yaml ``brevo_template_id``).
    provider_templates: bool = False


def event_view(row: Mapping[str, Any] | None) -> dict[str, Any] | None:
    if row is None:
        return None
    canonical = row.get("canonical") or {}
    occurred = row.get("occurred_at")
    return {
        "id": row["id"],
        "type": row["type"],
        "source": row.get("source"),
        "occurred_at": occurred.isoformat() if isinstance(occurred, datetime) else occurred,
        "data": canonical.get("data") or {},
    }


def load_event(conn: Connection, event_id: int | None) -> dict[str, Any] | None:
    return event_view(event_store.get(conn, event_id)) if event_id is not None else None


@dataclass
class Prepared:
    contact: ContactState
    event: dict[str, Any] | None


def message_values(
    payload: Mapping[str, Any], key: str, channel: str, provider: str, to: str | None
) -> dict[str, Any]:
    return {
        "key": key,
        "channel": channel,
        "provider": provider,
        "contact_id": payload.get("contact_id"),
        "to_address": to,
        "template": payload.get("template"),
        "transactional": bool(payload.get("transactional", False)),
        "rule_id": payload.get("rule_id"),
        "event_id": payload.get("event_id"),
        "enrollment_id": payload.get("enrollment_id"),
        "step_id": payload.get("step_id"),
    }


class Delivery:
    """The ``send_email`` and ``send_sms`` handlers, over injected channels."""

    def __init__(
        self,
        db: Database,
        clock: Clock,
        config: DeliveryConfig,
        templates: TemplateStore,
        email: EmailChannel,
        sms: SmsChannel,
        email_limiter: RateLimiter | None = None,
        sms_limiter: RateLimiter | None = None,
    ) -> None:
        self.db = db
        self.clock = clock
        self.config = config
        self.templates = templates
        self.email = email
        self.sms = sms
        self.email_limiter = email_limiter
        self.sms_limiter = sms_limiter

    # -- e-mail -------------------------------------------------------------------------------

    async def send_email(self, job: JobLike) -> None:
        payload = job.payload
        transactional = bool(payload.get("transactional", False))
        prepared = await asyncio.to_thread(
            self._prepare, job.key, payload, "email", self.email.name, transactional
        )
        if prepared is None:
            return
        contact = prepared.contact
        assert contact.email is not None
        unsub = unsubscribe_url(self.config.public_url, self.config.unsubscribe_key, contact.id)
        variables = self.variables(payload, contact, prepared.event, unsub)
        try:
            rendered = self.templates.render(
                str(payload["template"]),
                variables,
                provider_templates=self.config.provider_templates,
            )
        except TemplateError as exc:
            # Permanent until someone fixes the template; then the dead job is retried.
            raise ProviderError(str(exc), permanent=True) from exc
        headers = (
            {}
            if transactional
            else list_unsubscribe_headers(unsub, self.config.unsubscribe_mailto or None)
        )
        if self.email_limiter is not None:
            await self.email_limiter.acquire()
        values = message_values(payload, job.key, "email", self.email.name, contact.email)
        values["subject"] = rendered.subject
        claim = await asyncio.to_thread(self._claim, values)
        if claim is None:
            return
        name = " ".join(p for p in (contact.first_name, contact.last_name) if p) or None
        message = OutboundEmail(
            message_id=claim.id,
            key=job.key,
            to=contact.email,
            to_name=name,
            sender=self.config.email_from,
            subject=rendered.subject,
            html=rendered.html,
            text=rendered.text,
            headers=headers,
            provider_template=rendered.provider_template,
            params=rendered.params,
            transactional=transactional,
        )
        result = await self._attempt(
            claim, self.email.send(message, uncertain=claim.uncertain), self.email_limiter
        )
        log.info(
            "e-mail sent",
            extra={
                "action": "email.sent",
                "message_id": claim.id,
                "key": job.key,
                "provider": self.email.name,
                "provider_message_id": result.provider_message_id,
                "settled": result.settled,
            },
        )

    def variables(
        self,
        payload: Mapping[str, Any],
        contact: ContactState,
        event: dict[str, Any] | None,
        unsubscribe: str,
    ) -> dict[str, Any]:
        enrollment_id = payload.get("enrollment_id")
        step_id = payload.get("step_id")
        variables: dict[str, Any] = {
            "contact": contact.view(),
            "event": event,
            "enrollment": {"id": enrollment_id} if enrollment_id is not None else None,
            "step": {"id": step_id} if step_id is not None else None,
            "rule_id": payload.get("rule_id"),
            "unsubscribe_url": unsubscribe,
        }
        variables.update(payload.get("vars") or {})
        return variables

    # -- SMS ----------------------------------------------------------------------------------

    async def send_sms(self, job: JobLike) -> None:
        payload = job.payload
        transactional = bool(payload.get("transactional", False))
        prepared = await asyncio.to_thread(
            self._prepare, job.key, payload, "sms", self.sms.name, transactional
        )
        if prepared is None:
            return
        contact = prepared.contact
        assert contact.phone is not None
        unsub = unsubscribe_url(self.config.public_url, self.config.unsubscribe_key, contact.id)
        variables = self.variables(payload, contact, prepared.event, unsub)
        try:
            if payload.get("template"):
                text = self.templates.render_sms(str(payload["template"]), variables)
            elif payload.get("text"):
                text = self.templates.render_string(
                    str(payload["text"]), variables, where="sms text"
                )
            else:
                raise TemplateError("send_sms needs a template or a text")
        except TemplateError as exc:
            raise ProviderError(str(exc), permanent=True) from exc
        if self.sms_limiter is not None:
            await self.sms_limiter.acquire()
        values = message_values(payload, job.key, "sms", self.sms.name, contact.phone)
        claim = await asyncio.to_thread(self._claim, values)
        if claim is None:
            return
        message = OutboundSms(
            message_id=claim.id,
            key=job.key,
            to=contact.phone,
            sender=self.config.sms_sender,
            text=text,
            transactional=transactional,
        )
        await self._attempt(
            claim, self.sms.send(message, uncertain=claim.uncertain), self.sms_limiter
        )

    # -- shared -------------------------------------------------------------------------------

    def _prepare(
        self,
        key: str,
        payload: Mapping[str, Any],
        channel: str,
        provider: str,
        transactional: bool,
    ) -> Prepared | None:
        """``None`` when there is nothing to send (settled, erased, no address, suppressed)."""
        unsent: tuple[str, str] | None = None
        # Reads only: the common case (send) writes nothing until the claim.
        with self.db.read() as conn:
            existing = message_store.get_by_key(conn, key)
            if existing is not None and existing["status"] in message_store.FINAL:
                return None
            contact_id = payload.get("contact_id")
            contact = contact_store.load(conn, int(contact_id)) if contact_id is not None else None
            address = None
            if contact is not None:
                address = contact.email if channel == "email" else contact.phone
            if contact is None:
                unsent = ("skipped", "contact not found (erased?)")
            elif not address:
                what = "e-mail address" if channel == "email" else "phone number"
                unsent = ("skipped", f"the contact has no {what}")
            else:
                reason = self._blocked(conn, contact, channel, transactional)
                if reason is not None:
                    unsent = ("suppressed", reason)
            event = load_event(conn, payload.get("event_id")) if unsent is None else None
        if unsent is not None or contact is None:
            status, error = unsent or ("skipped", "contact not found (erased?)")
            values = message_values(payload, key, channel, provider, address)
            with self.db.begin() as conn:
                self._settle_unsent(conn, values, status, error, self.clock.now())
            if status == "suppressed":
                log.info(
                    "send suppressed",
                    extra={"action": f"{channel}.suppressed", "key": key, "reason": error},
                )
            return None
        return Prepared(contact, event)

    def _blocked(
        self, conn: Connection, contact: ContactState, channel: str, transactional: bool
    ) -> str | None:
        if channel == "email":
            if contact.status == "bounced" or (not transactional and contact.suppressed):
                return f"contact status {contact.status}"
            return suppression.check(conn, contact.id, contact.email, transactional=transactional)
        # SMS: a bounce is about the mailbox, not the phone; opt-outs still apply to marketing.
        reasons = suppression.check(conn, contact.id, contact.email, transactional=transactional)
        if transactional:
            return reasons if reasons == "erased" else None
        if contact.status in ("unsubscribed", "complained"):
            return f"contact status {contact.status}"
        return reasons if reasons not in (None, "bounced") else None

    @staticmethod
    def _settle_unsent(
        conn: Connection, values: dict[str, Any], status: str, error: str, now: datetime
    ) -> None:
        if message_store.record(conn, {**values, "error": error}, status, now) is None:
            existing = message_store.get_by_key(conn, values["key"])
            if existing is not None and existing["status"] not in message_store.FINAL:
                message_store.fail(conn, existing["id"], status, error, now)

    def _claim(self, values: dict[str, Any]) -> message_store.Claim | None:
        with self.db.begin() as conn:
            if not suppression.hold_for_send(conn, values["contact_id"]):
                # Erased since the checks: settle the key without the address.
                gone = {**values, "contact_id": None, "to_address": None}
                self._settle_unsent(conn, gone, "skipped", "contact erased", self.clock.now())
                return None
            return message_store.claim(conn, values, self.clock.now())

    def _mark(self, message_id: int, status: str, error: str) -> None:
        with self.db.begin() as conn:
            message_store.fail(conn, message_id, status, error, self.clock.now())

    def _complete(self, message_id: int, result: SendResult) -> None:
        with self.db.begin() as conn:
            message_store.complete(
                conn, message_id, result.provider_message_id, result.settled, self.clock.now()
            )

    async def _attempt(
        self, claim: message_store.Claim, call: Any, limiter: RateLimiter | None
    ) -> SendResult:
        try:
            result: SendResult = await call
        except SendUncertain as exc:
            await asyncio.to_thread(self._mark, claim.id, "sending", str(exc))
            raise
        except ProviderError as exc:
            status = "failed" if exc.permanent else "retrying"
            await asyncio.to_thread(self._mark, claim.id, status, str(exc))
            if limiter is not None and not exc.permanent and exc.retry_after:
                # The provider throttled the account: every worker's sends wait, not just this.
                await limiter.pause(exc.retry_after)
            raise
        except BaseException as exc:
            # A bug or a cancellation mid-call: the provider may have the message. Keep the row
            # ``sending`` so the retry settles it rather than assuming either way.
            try:
                await asyncio.to_thread(
                    self._mark, claim.id, "sending", f"{type(exc).__name__}: {exc}"
                )
            except Exception:
                log.exception(
                    "could not record a failed send", extra={"action": "email.mark_error"}
                )
            raise
        await asyncio.to_thread(self._complete, claim.id, result)
        return result
