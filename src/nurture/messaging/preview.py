"""A template rendered as the sender would render it for one stored contact (and optionally
the event the e-mail answers), or for the template's sample data: the console's preview.
Strict like a send: a missing variable is the ``TemplateError``, never a half-rendered mail."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from nurture.config import Settings
from nurture.core.events import normalise_email
from nurture.database.engine import Database
from nurture.messaging.deliver import load_event
from nurture.messaging.templates import Rendered, TemplateError, TemplateStore
from nurture.messaging.unsubscribe import signing_key, unsubscribe_url
from nurture.storage import contacts as contact_store


@dataclass
class Preview:
    rendered: Rendered | None = None
    problem: str | None = None  # the template's own error (strict mode)
    errors: dict[str, str] = field(default_factory=dict)  # per form field: contact, event


def _variables(
    db: Database, settings: Settings, contact_ref: str, event_ref: str, errors: dict[str, str]
) -> dict[str, Any]:
    with db.read() as conn:
        contact = None
        if contact_ref.isdigit() and len(contact_ref) < 19:
            contact = contact_store.load(conn, int(contact_ref))
        else:
            email = normalise_email(contact_ref)
            contact = contact_store.load_by_email(conn, email) if email else None
        if contact is None:
            errors["contact"] = f"no contact {contact_ref[:80]!r}"
        event = None
        if event_ref and (not event_ref.isdigit() or len(event_ref) > 18):
            errors["event"] = "an event number, e.g. 42"
        elif event_ref:
            event = load_event(conn, int(event_ref))
            if event is None:
                errors["event"] = f"no event {event_ref}"
    if contact is None:
        return {}
    # What ``deliver.Deliverer.variables`` passes for a send outside a sequence.
    return {
        "contact": contact.view(),
        "event": event,
        "enrollment": None,
        "step": None,
        "rule_id": None,
        "unsubscribe_url": unsubscribe_url(settings.public_url, signing_key(settings), contact.id),
    }


def preview(
    db: Database,
    settings: Settings,
    store: TemplateStore,
    name: str,
    contact_ref: str = "",
    event_ref: str = "",
) -> Preview:
    """``contact_ref``: an id or an e-mail (empty: the sample data); ``event_ref``: an id."""
    out = Preview()
    if contact_ref:
        variables = _variables(db, settings, contact_ref, event_ref, out.errors)
    else:
        variables = store.sample_for(name)
    if out.errors:
        return out
    try:
        out.rendered = store.render(name, variables)
    except TemplateError as exc:
        out.problem = str(exc)
    return out
