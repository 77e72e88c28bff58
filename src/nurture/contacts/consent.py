"""Consent of form signups, and the double opt-in.

Every submission of a form that declares ``consent:`` is recorded (``consents``): the text and
version agreed to, the consent fields as submitted, when, and the sender's address. With
``double_opt_in: true`` the submission arrives as ``form.unconfirmed``: the contact, if new,
starts ``pending`` (no marketing mail), and a transactional confirmation e-mail carries a signed
link. Following it (``POST /confirm/{token}``, see ``web/confirm.py``) confirms the consent,
lifts the contact's suppressions (the person asked, as with an explicit re-subscribe) and
queues ``consent.confirmed``; processing that event derives the form's own event
(``form.submitted``) with the original fields, so rules and sequences start only then.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Connection

from nurture.contacts import suppression
from nurture.intake.context import ProcessingContext
from nurture.jobs import enqueue
from nurture.storage import consents as store
from nurture.storage import contacts as contact_store
from nurture.storage import events as event_store

CONFIRMED = "consent.confirmed"
# Consent rows an event leaves in ``ctx.results`` for ``ConsentStep.finish_batch``.
BATCH_CONSENTS = "consent.rows"


class ConsentStep:
    """Records consent and starts (or completes) the double opt-in. Before the rules, so a
    pending contact is already ``pending`` when a rule would mail it."""

    name = "consent"

    def __init__(self, confirm_url: Callable[[int], str]) -> None:
        self.confirm_url = confirm_url  # consent id -> the signed link (messaging.unsubscribe)

    def apply(self, ctx: ProcessingContext) -> None:
        if ctx.contact is None:
            return
        if ctx.event.type == CONFIRMED:
            self._confirmed(ctx)
            return
        consent = ctx.event.data.get("consent")
        if not isinstance(consent, dict):
            return
        contact = ctx.contact
        double = bool(consent.get("double_opt_in"))
        row = {
            "contact_id": contact.id,
            "form_id": str(ctx.event.data.get("form") or ""),
            "text": consent.get("text"),
            "version": consent.get("version"),
            "fields": consent.get("fields") or {},
            "status": "pending" if double else "given",
            "given_at": ctx.event.received_at,
            "client_addr": consent.get("client_addr"),
            "event_id": ctx.event.id,
        }
        form = ctx.event.data.get("form")
        if not double:
            # Nothing needs its id: written with the batch (``finish_batch``), one statement for
            # every signup of the batch instead of one each (a signup's single largest write).
            ctx.results.setdefault(BATCH_CONSENTS, []).append(row)
            ctx.note("consent.given", {"form": form})
            return
        consent_id = store.record(ctx.conn, row)
        ctx.note("consent.pending", {"consent_id": consent_id, "form": form})
        if any(note["kind"] == "contact.created" for note in ctx.timeline):
            # A new address waits for its confirmation; a known contact keeps its status.
            contact.degrade_status("pending")
        enqueue(
            ctx.conn,
            kind="send_email",
            key=f"confirm:{consent_id}",
            run_at=ctx.now,
            payload={
                "template": consent.get("confirm_template") or "confirm_subscription",
                "contact_id": contact.id,
                "event_id": ctx.event.id,
                "rule_id": None,
                "enrollment_id": None,
                "step_id": None,
                "transactional": True,  # the address is not confirmed: this mail asks
                "vars": {"confirm_url": self.confirm_url(consent_id)},
            },
            contact_id=contact.id,
            now=ctx.now,
        )

    def finish_batch(
        self, conn: Connection, contexts: Sequence[ProcessingContext], now: datetime
    ) -> None:
        """The batch's consent rows (events that succeeded), in its transaction."""
        store.record_many(conn, [r for c in contexts for r in c.results.get(BATCH_CONSENTS, ())])

    def _confirmed(self, ctx: ProcessingContext) -> None:
        assert ctx.contact is not None
        row = store.get(ctx.conn, int(ctx.event.data.get("consent_id") or 0))
        if row is None or row["contact_id"] != ctx.contact.id or row["event_id"] is None:
            return  # erased meanwhile, or not this contact's
        original = event_store.get(ctx.conn, row["event_id"])
        if original is None:
            return
        data: dict[str, Any] = dict((original["canonical"] or {}).get("data") or {})
        consent = data.pop("consent", None) or {}
        then = consent.get("then")
        if isinstance(then, str) and data.get("erased") is not True:
            ctx.derive(then, {**data, "consent_id": row["id"], "confirmed": True})


def confirm(
    conn: Connection, consent_id: int, now: datetime, client_addr: str | None
) -> int | None:
    """The person followed the confirmation link: the contact id to queue ``consent.confirmed``
    for, or ``None`` when there is nothing (left) to confirm (a second click, an erased
    contact). Lifts the contact's suppressions: confirming is an explicit opt-in."""
    row = store.get(conn, consent_id)
    if row is None or not store.confirm(conn, consent_id, now, client_addr):
        return None
    contact_id = int(row["contact_id"])
    contact = contact_store.load(conn, contact_id)
    if contact is None:
        return None
    if contact.status != "subscribed" or suppression.check(
        conn, contact_id, contact.email, transactional=False
    ):
        suppression.resubscribe(conn, contact_id, now, by=f"double opt-in (consent {consent_id})")
    return contact_id
