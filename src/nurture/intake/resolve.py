"""Resolving a batch's contacts in a handful of queries instead of several per event.

Resolution order per event: the e-mail, else any known identity, else a new contact. Events are
walked in order so that a contact created for one event is found by the next one naming it.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import Connection

from nurture.core.contacts import ContactState
from nurture.core.events import ContactRef, StoredEvent, email_hash
from nurture.storage import contacts as contact_store
from nurture.storage import suppressions as suppression_store


def _carry_suppressions(conn: Connection, created: Sequence[ContactState]) -> None:
    """An address suppressed before (unsubscribed, bounced, erased) starts suppressed again;
    the same rule as ``contacts.suppression.carry_over``, which this layer cannot import."""
    hashes = {s.id: email_hash(s.email) for s in created if s.email}
    if not hashes:
        return
    found = suppression_store.reasons_by_hash(conn, [h for h in hashes.values() if h])
    if found:
        for state in created:
            state.carry_suppressions(found.get(hashes.get(state.id) or "", set()))


class BatchContacts:
    """The contacts of one batch, loaded and created up front, written back once at the end."""

    def __init__(self) -> None:
        self.by_email: dict[str, ContactState] = {}
        self.by_identity: dict[tuple[str, str], ContactState] = {}
        self.for_event: dict[int, ContactState] = {}
        self.new_identities: list[tuple[int, dict[str, str]]] = []

    def states(self) -> list[ContactState]:
        seen: dict[int, ContactState] = {}
        for state in self.for_event.values():
            seen.setdefault(state.id, state)
        return list(seen.values())

    def load(self, conn: Connection, batch: Sequence[StoredEvent], now: datetime) -> None:
        refs = [(e.id, e.contact) for e in batch if e.contact is not None and e.contact.key]
        emails = sorted({r.email for _, r in refs if r and r.email})
        pairs = sorted({(k, v) for _, r in refs if r for k, v in r.identities.items()})
        ident_ids = contact_store.ids_by_identities(conn, pairs) if pairs else {}
        for state in contact_store.load_many(
            conn, emails=emails, ids=sorted(set(ident_ids.values()))
        ):
            self._index(state)

        # Walk in order; contacts to create are placeholders until one INSERT gives them ids.
        pending: list[ContactState] = []
        for event_id, ref in refs:
            assert ref is not None
            found = self._find(ref)
            if found is None:
                state = ContactState(id=0, email=ref.email, is_new=True)
                pending.append(state)
            else:
                state = found
                if ref.email and state.email is None and ref.email not in self.by_email:
                    state.email = ref.email  # known by an identity until now: learn the address
                    state.dirty = True
            self._index(state)
            for kind, value in ref.identities.items():
                self.by_identity.setdefault((kind, value), state)
            self.for_event[event_id] = state
        created = contact_store.create_many(conn, [p.email for p in pending], now)
        for placeholder, fresh in zip(pending, created, strict=True):
            placeholder.id = fresh.id
            placeholder.created_at = fresh.created_at
            placeholder.updated_at = fresh.updated_at
        _carry_suppressions(conn, pending)

    def _find(self, ref: ContactRef) -> ContactState | None:
        if ref.email and ref.email in self.by_email:
            return self.by_email[ref.email]
        for kind, value in sorted(ref.identities.items()):
            state = self.by_identity.get((kind, value))
            if state is not None:
                return state
        return None

    def _index(self, state: ContactState) -> None:
        if state.email:
            self.by_email.setdefault(state.email, state)
        for kind, value in state.identities.items():
            self.by_identity.setdefault((kind, value), state)

    def attach(self, event: StoredEvent) -> ContactState | None:
        """The event's contact, with the event's identities and traits applied."""
        state = self.for_event.get(event.id)
        ref = event.contact
        if state is None or ref is None:
            return None
        missing = {k: v for k, v in ref.identities.items() if state.identities.get(k) != v}
        if missing:
            state.identities.update(missing)
            self.new_identities.append((state.id, missing))
        if ref.traits:
            state.apply_traits(ref.traits)
        return state

    def flush(self, conn: Connection, now: datetime) -> None:
        for contact_id, idents in self.new_identities:
            contact_store.add_identities(conn, contact_id, idents)
        self.new_identities.clear()
        contact_store.save_many(conn, [s for s in self.states() if s.dirty], now)
