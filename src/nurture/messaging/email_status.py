"""The processing step for delivery events (``email.*``): link them to the message nurture sent,
record them on its row, and suppress the contact on a hard bounce, complaint or unsubscribe.

Status only moves down (``ContactState.degrade_status``): a late ``delivered`` never lifts a bounce.
"""

from __future__ import annotations

from typing import Any

from nurture.contacts import suppression
from nurture.intake.context import ProcessingContext
from nurture.storage import messages as message_store

# event type -> (message column kind, contact status, suppression reason)
EFFECTS: dict[str, tuple[str, str | None, str | None]] = {
    "email.delivered": ("delivered", None, None),
    "email.opened": ("opened", None, None),
    "email.clicked": ("clicked", None, None),
    "email.bounced": ("bounced", None, None),  # hard bounces: see _effect
    "email.complained": ("complained", "complained", "complained"),
    "email.unsubscribed": ("unsubscribed", "unsubscribed", "unsubscribed"),
}
HARD_KINDS = frozenset({"hard", "invalid"})


def _effect(event_type: str, data: dict[str, Any]) -> tuple[str, str | None, str | None] | None:
    effect = EFFECTS.get(event_type)
    if effect is None:
        return None
    if event_type == "email.bounced" and str(data.get("kind", "")).lower() in HARD_KINDS:
        return ("bounced", "bounced", "bounced")
    return effect


class EmailStatusStep:
    name = "email_status"

    def apply(self, ctx: ProcessingContext) -> None:
        event = ctx.event
        if not event.type.startswith("email."):
            return
        effect = _effect(event.type, event.data)
        if effect is None:
            return
        kind, status, reason = effect
        message = self._message(ctx, event.data)
        detail: dict[str, Any] = {"type": event.type}
        rule_id = None
        if message is not None:
            message_store.mark_event(ctx.conn, message["id"], kind, event.occurred_at)
            rule_id = message["rule_id"]
            detail.update(
                message_id=message["id"],
                template=message["template"],
                step_id=message["step_id"],
                enrollment_id=message["enrollment_id"],
            )
            if event.data.get("link"):
                detail["link"] = event.data["link"]
        contact = ctx.contact
        if contact is None or status is None or reason is None:
            if message is not None:
                ctx.note(f"message.{kind}", detail, rule_id=rule_id)
            return
        if contact.degrade_status(status):
            detail["status"] = status
        suppression.suppress(ctx.conn, contact, reason, ctx.now, event_id=event.id)
        ctx.note(f"message.{kind}", detail, rule_id=rule_id)

    @staticmethod
    def _message(ctx: ProcessingContext, data: dict[str, Any]) -> dict[str, Any] | None:
        ours = data.get("message_id")
        if ours is not None and str(ours).isdigit():
            found = message_store.get(ctx.conn, int(ours))
            if found is not None:
                return found
        theirs = data.get("provider_message_id")
        if theirs:
            return message_store.get_by_provider_id(ctx.conn, str(theirs))
        return None
