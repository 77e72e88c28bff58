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

E-mails go in batches (``coalesce``): the ``send_email`` calls in flight together run each step
for all of them at once, so step 1 is one read, step 4 one commit and the record of step 5 one
commit per batch, and a channel with a batch API (``BatchEmailChannel``) sends them in a few
requests. A request that covers several e-mails under one idempotency key (Resend) is stored at
step 4 with the claims, and a batch whose outcome is unknown is settled by replaying it.
"""

from __future__ import annotations

import asyncio
import logging
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from sqlalchemy import Connection

from nurture.clock import Clock
from nurture.contacts import suppression
from nurture.core.channels import (
    BatchEmailChannel,
    BatchOutcome,
    BatchRequest,
    EmailChannel,
    OutboundEmail,
    OutboundSms,
    SendResult,
    SendUncertain,
    SmsChannel,
)
from nurture.core.contacts import ContactState
from nurture.database.engine import Database
from nurture.errors import ProviderError, RateLimited
from nurture.messaging.coalesce import Coalescer
from nurture.messaging.ratelimit import RateLimiter
from nurture.messaging.templates import Rendered, TemplateError, TemplateStore
from nurture.messaging.unsubscribe import list_unsubscribe_headers, unsubscribe_url
from nurture.storage import contacts as contact_store
from nurture.storage import events as event_store
from nurture.storage import messages as message_store

log = logging.getLogger("nurture.deliver")

# ``send_email`` calls arriving within this many seconds of each other share one batch (one
# read, one claim commit, one provider batch request, one completion commit), up to this many.
DEFAULT_BATCH_SIZE = 100
DEFAULT_BATCH_LINGER = 0.005


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


@dataclass(eq=False)
class _Email:
    """One ``send_email`` job on its way through a batch."""

    job: JobLike
    payload: Mapping[str, Any]
    contact: ContactState | None = None
    event: dict[str, Any] | None = None
    ready: bool = False  # may be sent: not settled, contact there, not suppressed
    rendered: Rendered | None = None
    headers: dict[str, str] = field(default_factory=dict)
    claim: message_store.Claim | None = None
    message: OutboundEmail | None = None
    outcome: BaseException | None = None  # what the job's attempt raises

    @property
    def transactional(self) -> bool:
        return bool(self.payload.get("transactional", False))

    @property
    def message_id(self) -> int:
        assert self.claim is not None, "only claimed e-mails have a message id"
        return self.claim.id


@dataclass
class _Plan:
    """The claimed e-mails of a batch and the requests that send them."""

    items: list[_Email] = field(default_factory=list)
    singles: list[_Email] = field(default_factory=list)
    batches: list[BatchRequest] = field(default_factory=list)
    replays: list[BatchRequest] = field(default_factory=list)  # stored requests sent again


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
        *,
        batch_size: int = DEFAULT_BATCH_SIZE,
        batch_linger: float = DEFAULT_BATCH_LINGER,
    ) -> None:
        self.db = db
        self.clock = clock
        self.config = config
        self.templates = templates
        self.email = email
        self.sms = sms
        self.email_limiter = email_limiter
        self.sms_limiter = sms_limiter
        self._emails: Coalescer[JobLike] = Coalescer(
            self._send_email_batch,
            max_size=max(batch_size, getattr(email, "batch_size", 1)),
            linger=batch_linger,
        )

    # -- e-mail -------------------------------------------------------------------------------

    async def send_email(self, job: JobLike) -> None:
        """Send one job's e-mail; concurrent calls are sent together (see ``coalesce``)."""
        await self._emails.submit(job)

    async def _send_email_batch(self, jobs: list[JobLike]) -> list[BaseException | None]:
        """The batch behind ``send_email``: one outcome per job (``None``: nothing to retry)."""
        seen: set[str] = set()
        first: list[JobLike] = []
        again: list[int] = []  # positions, in order
        for i, job in enumerate(jobs):
            if job.key in seen:
                again.append(i)  # a key twice in one batch: the second waits for the first
            else:
                seen.add(job.key)
                first.append(job)
        outcomes = await self._email_batch(first)
        if not again:
            return outcomes
        later = await self._send_email_batch([jobs[i] for i in again])
        repeated = set(again)
        it_first, it_later = iter(outcomes), iter(later)
        return [next(it_later) if i in repeated else next(it_first) for i in range(len(jobs))]

    async def _email_batch(self, jobs: list[JobLike]) -> list[BaseException | None]:
        items = await asyncio.to_thread(self._prepare_emails, jobs)
        ready = [it for it in items if it.outcome is None and it.rendered is not None]
        if ready and self.email_limiter is not None:
            # A token per provider request: a batch request of 100 e-mails is one request to
            # the provider's rate limit (Resend's 2/s, Brevo's 1,000/s count requests).
            requests = self._requests(ready)
            granted, wait = await self.email_limiter.acquire_up_to(len(requests))
            for request in requests[granted:]:
                for it in request:
                    it.outcome = RateLimited(
                        f"{self.email_limiter.name}: local rate limit", retry_after=wait
                    )
            ready = [it for request in requests[:granted] for it in request]
        if not ready:
            return [it.outcome for it in items]
        plan = await asyncio.to_thread(self._claim_emails, ready)
        try:
            sent = await self._send_planned(plan)
        except BaseException as exc:
            # A bug or a cancellation mid-send: the provider may have any of these. Rows stay
            # ``sending`` so their retries settle them rather than assuming either way.
            try:
                await asyncio.to_thread(
                    self._mark_many,
                    [
                        (it.message_id, "sending", f"{type(exc).__name__}: {exc}")
                        for it in plan.items
                    ],
                )
            except Exception:
                log.exception(
                    "could not record a failed send", extra={"action": "email.mark_error"}
                )
            raise
        await asyncio.to_thread(self._settle_sent, plan, sent)
        pause = max(
            (
                o.retry_after or 0.0
                for o in sent.values()
                if isinstance(o, ProviderError)
                and not isinstance(o, SendUncertain)
                and not o.permanent
            ),
            default=0.0,
        )
        if pause and self.email_limiter is not None:
            # The provider throttled the account: every worker's sends wait, not just this.
            await self.email_limiter.pause(pause)
        for it in plan.items:
            outcome = sent[it.message_id]
            if isinstance(outcome, BaseException):
                it.outcome = outcome
                continue
            log.info(
                "e-mail sent",
                extra={
                    "action": "email.sent",
                    "message_id": it.message_id,
                    "key": it.job.key,
                    "provider": self.email.name,
                    "provider_message_id": outcome.provider_message_id,
                    "settled": outcome.settled,
                },
            )
        return [it.outcome for it in items]

    def _requests(self, items: Sequence[_Email]) -> list[list[_Email]]:
        """How the channel will send ``items``: the members of each provider request."""
        batching = self.email if isinstance(self.email, BatchEmailChannel) else None
        if batching is None:
            return [[it] for it in items]
        groups: dict[Any, list[_Email]] = {}
        requests: list[list[_Email]] = []
        for it in items:
            group = batching.batch_group(self._outbound(it, 0))
            if group is None:
                requests.append([it])
            else:
                groups.setdefault(group, []).append(it)
        for members in groups.values():
            size = batching.batch_size
            requests.extend(members[i : i + size] for i in range(0, len(members), size))
        return requests

    def _prepare_emails(self, jobs: Sequence[JobLike]) -> list[_Email]:
        """Reads for the whole batch in one transaction, then renders; settles the e-mails that
        must not go (settled key, erased contact, no address, suppressed) in one more."""
        items = [_Email(job, job.payload) for job in jobs]
        unsent: list[tuple[_Email, str, str]] = []
        with self.db.read() as conn:
            existing = message_store.statuses_by_key(conn, [it.job.key for it in items])
            ids = {
                int(it.payload["contact_id"])
                for it in items
                if it.payload.get("contact_id") is not None
            }
            contacts = {c.id: c for c in contact_store.load_many(conn, ids=sorted(ids))}
            live: list[_Email] = []
            for it in items:
                if existing.get(it.job.key) in message_store.FINAL:
                    continue  # a replay or a second worker: nothing to do
                cid = it.payload.get("contact_id")
                it.contact = contacts.get(int(cid)) if cid is not None else None
                if it.contact is None:
                    unsent.append((it, "skipped", "contact not found (erased?)"))
                elif not it.contact.email:
                    unsent.append((it, "skipped", "the contact has no e-mail address"))
                else:
                    live.append(it)
            blocked = suppression.check_many(
                conn,
                [
                    (it.contact.id, it.contact.email, it.transactional)
                    for it in live
                    if it.contact is not None
                ],
            )
            events: dict[int, dict[str, Any] | None] = {}
            for it, reason in zip(live, blocked, strict=True):
                assert it.contact is not None
                if it.contact.status == "bounced" or (
                    not it.transactional and it.contact.suppressed
                ):
                    reason = f"contact status {it.contact.status}"
                if reason is not None:
                    unsent.append((it, "suppressed", reason))
                    continue
                event_id = it.payload.get("event_id")
                if event_id is not None and event_id not in events:
                    events[event_id] = load_event(conn, event_id)
                it.event = events.get(event_id) if event_id is not None else None
                it.ready = True
        if unsent:
            self._settle_unsent_many(unsent)
        for it in items:
            if it.ready:
                self._render_email(it)
        return items

    def _settle_unsent_many(self, unsent: Sequence[tuple[_Email, str, str]]) -> None:
        now = self.clock.now()
        with self.db.begin() as conn:
            for it, status, error in unsent:
                address = it.contact.email if it.contact is not None else None
                values = message_values(it.payload, it.job.key, "email", self.email.name, address)
                self._settle_unsent(conn, values, status, error, now)
        for it, status, error in unsent:
            if status == "suppressed":
                log.info(
                    "send suppressed",
                    extra={"action": "email.suppressed", "key": it.job.key, "reason": error},
                )

    def _render_email(self, it: _Email) -> None:
        contact = it.contact
        assert contact is not None and contact.email is not None
        unsub = unsubscribe_url(self.config.public_url, self.config.unsubscribe_key, contact.id)
        variables = self.variables(it.payload, contact, it.event, unsub)
        try:
            it.rendered = self.templates.render(
                str(it.payload["template"]),
                variables,
                provider_templates=self.config.provider_templates,
            )
        except TemplateError as exc:
            # Permanent until someone fixes the template; then the dead job is retried.
            it.outcome = ProviderError(str(exc), permanent=True)
            return
        if not it.transactional:
            it.headers = list_unsubscribe_headers(unsub, self.config.unsubscribe_mailto or None)

    def _claim_emails(self, items: Sequence[_Email]) -> _Plan:
        """Claim every row in one committed transaction, before any provider call; with a batch
        API, group the new rows into requests and store those a lost answer would replay."""
        now = self.clock.now()
        values = []
        for it in items:
            assert it.contact is not None and it.rendered is not None
            v = message_values(it.payload, it.job.key, "email", self.email.name, it.contact.email)
            v["subject"] = it.rendered.subject
            values.append(v)
        plan = _Plan()
        batching = self.email if isinstance(self.email, BatchEmailChannel) else None
        with self.db.begin() as conn:
            # Erased since the checks? The claim share-locks each contact until this commits,
            # so an erasure either came first (settle the key without the address) or waits
            # and then strips the claimed rows.
            present = suppression.hold_for_send_many(
                conn, [it.contact.id for it in items if it.contact is not None]
            )
            kept: list[_Email] = []
            kept_values: list[dict[str, Any]] = []
            for it, v in zip(items, values, strict=True):
                if it.contact is not None and it.contact.id in present:
                    kept.append(it)
                    kept_values.append(v)
                else:
                    gone = {**v, "contact_id": None, "to_address": None, "subject": None}
                    self._settle_unsent(conn, gone, "skipped", "contact erased", now)
            items = kept
            claims = message_store.claim_many(conn, kept_values, now)
            groups: dict[Any, list[_Email]] = {}
            uncertain: list[_Email] = []
            for it, claim in zip(items, claims, strict=True):
                if claim is None:
                    continue  # settled meanwhile by another worker
                it.claim = claim
                it.message = self._outbound(it, claim.id)
                plan.items.append(it)
                group = batching.batch_group(it.message) if batching is not None else None
                if claim.uncertain and batching is not None and batching.replays_batches:
                    uncertain.append(it)
                elif group is None or claim.uncertain:
                    plan.singles.append(it)
                else:
                    groups.setdefault(group, []).append(it)
            if uncertain:
                assert batching is not None
                stored = message_store.batches_with(conn, [it.message_id for it in uncertain])
                covered: set[int] = set()
                for row in stored:
                    request = BatchRequest(
                        row["key"], tuple(row["message_ids"]), zlib.decompress(row["body"])
                    )
                    plan.replays.append(request)
                    covered.update(request.message_ids)
                # Sent alone (a batch of one is a single request) or in no stored batch.
                plan.singles.extend(it for it in uncertain if it.message_id not in covered)
            for members in groups.values():
                assert batching is not None
                for start in range(0, len(members), batching.batch_size):
                    chunk = members[start : start + batching.batch_size]
                    if len(chunk) == 1:
                        plan.singles.extend(chunk)
                        continue
                    request = batching.batch_request([it.message for it in chunk if it.message])
                    plan.batches.append(request)
                    if batching.replays_batches:
                        message_store.save_batch(
                            conn,
                            request.key,
                            self.email.name,
                            request.message_ids,
                            zlib.compress(request.body, 1),
                            now,
                        )
        return plan

    def _outbound(self, it: _Email, message_id: int) -> OutboundEmail:
        contact, rendered = it.contact, it.rendered
        assert contact is not None and contact.email is not None and rendered is not None
        name = " ".join(p for p in (contact.first_name, contact.last_name) if p) or None
        return OutboundEmail(
            message_id=message_id,
            key=it.job.key,
            to=contact.email,
            to_name=name,
            sender=self.config.email_from,
            subject=rendered.subject,
            html=rendered.html,
            text=rendered.text,
            headers=it.headers,
            provider_template=rendered.provider_template,
            params=rendered.params,
            transactional=it.transactional,
        )

    async def _send_planned(self, plan: _Plan) -> dict[int, BatchOutcome]:
        """Every request of the plan at once (a pooled channel bounds its own concurrency);
        the outcome of each member by message id."""
        out: dict[int, BatchOutcome] = {}

        async def single(it: _Email) -> None:
            assert it.message is not None and it.claim is not None
            try:
                out[it.message_id] = await self.email.send(it.message, uncertain=it.claim.uncertain)
            except ProviderError as exc:
                out[it.message_id] = exc

        async def batch(request: BatchRequest, replay: bool) -> None:
            assert isinstance(self.email, BatchEmailChannel)
            try:
                results = await self.email.send_batch(request, replay=replay)
            except ProviderError as exc:
                results = [exc] * len(request.message_ids)
            out.update(zip(request.message_ids, results, strict=True))

        await asyncio.gather(
            *(single(it) for it in plan.singles),
            *(batch(r, False) for r in plan.batches),
            *(batch(r, True) for r in plan.replays),
        )
        return out

    def _settle_sent(self, plan: _Plan, sent: Mapping[int, BatchOutcome]) -> None:
        """Every outcome of the batch in one transaction; stored requests whose every member
        now has a known outcome are dropped."""
        done: list[tuple[int, str | None, str | None]] = []
        failed: list[tuple[int, str, str]] = []
        for message_id, outcome in sent.items():
            if isinstance(outcome, SendResult):
                done.append((message_id, outcome.provider_message_id, outcome.settled))
            elif isinstance(outcome, SendUncertain):
                failed.append((message_id, "sending", str(outcome)))
            else:
                failed.append(
                    (message_id, "failed" if outcome.permanent else "retrying", str(outcome))
                )
        known = [
            r.key
            for r in (*plan.batches, *plan.replays)
            if not any(isinstance(sent.get(m), SendUncertain) for m in r.message_ids)
        ]
        now = self.clock.now()
        with self.db.begin() as conn:
            message_store.complete_many(conn, done, now)
            message_store.fail_many(conn, failed, now)
            message_store.drop_batches(conn, known)

    def _mark_many(self, failed: Sequence[tuple[int, str, str]]) -> None:
        with self.db.begin() as conn:
            message_store.fail_many(conn, failed, self.clock.now())

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
        if contact.status in ("pending", "unsubscribed", "complained"):
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
