"""What the API and the CLI do with sequences: enrol a contact by hand, exit an enrollment,
and ``nurture check`` the sequences section."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

from nurture.database.engine import Database
from nurture.errors import ConfigError, FieldProblem, InvalidFields, NotFound
from nurture.sequences.common import Enrolment
from nurture.sequences.enrollment import SequenceService
from nurture.sequences.sinks import DirectSink
from nurture.storage import audit
from nurture.storage import contacts as contact_store
from nurture.storage import enrollments as store


def enroll_contact(
    db: Database,
    service: SequenceService,
    sequence_id: str,
    *,
    now: datetime,
    partitions: int,
    contact_id: int | None = None,
    email: str | None = None,
    key: str | None = None,
    anchor: datetime | None = None,
) -> tuple[Enrolment, dict[str, Any] | None]:
    """A manual enrolment (API): the contact must exist; ``key`` defaults to the contact."""
    seq = service.sequence(sequence_id)
    if seq.key is not None and key is None:
        raise InvalidFields(
            [FieldProblem("key", f"sequence {seq.id!r} is keyed by {seq.spec.key}")]
        )
    if seq.anchor is not None and anchor is None:
        raise InvalidFields([FieldProblem("anchor", f"sequence {seq.id!r} needs an anchor time")])
    with db.begin() as conn:
        contact = None
        if contact_id is not None:
            contact = contact_store.load(conn, contact_id)
        elif email is not None:
            contact = contact_store.load_by_email(conn, email.strip().lower())
        if contact is None:
            raise NotFound("no such contact")
        sink = DirectSink(conn, contact, now, partitions)
        result = service.enroll(
            conn,
            seq,
            contact,
            key or f"contact:{contact.id}",
            now=now,
            sink=sink,
            anchor=anchor,
            rule_id="api",
        )
        row = store.get(conn, result.enrollment_id) if result.enrollment_id is not None else None
    return result, row


def exit_enrollment(
    db: Database,
    service: SequenceService,
    enrollment_id: int,
    reason: str,
    *,
    now: datetime,
    partitions: int,
    contact_id: int | None = None,
    actor: str | None = None,
    client_addr: str | None = None,
) -> tuple[bool, dict[str, Any]]:
    """End a live enrollment (its pending steps are cancelled). ``contact_id``: only if it is
    that contact's (else ``NotFound``); ``actor``: audit the exit in the same transaction."""
    with db.begin() as conn:
        row = store.get(conn, enrollment_id, lock=True)
        if row is None or (contact_id is not None and row["contact_id"] != contact_id):
            raise NotFound(f"no enrollment {enrollment_id}")
        contact = contact_store.load(conn, row["contact_id"])
        ended = service.end(
            conn, row, "exited", reason, now, DirectSink(conn, contact, now, partitions)
        )
        if ended and actor is not None:
            audit.record(
                conn,
                at=now,
                actor=actor,
                action="enrollment.exit",
                target_kind="contact",
                target_id=str(row["contact_id"]),
                detail={"enrollment_id": enrollment_id, "sequence_id": row["sequence_id"]},
                client_addr=client_addr,
            )
        fresh = store.get(conn, enrollment_id)
    assert fresh is not None
    return ended, fresh


def check_automation(directory: Path | None) -> str:
    """``nurture check``: the sequences section, its fixed template names and the sequences
    that rules ``enroll``/``exit`` name; a summary line, or ``ConfigError`` listing problems."""
    from nurture.messaging.templates import template_store
    from nurture.pack import load_pack
    from nurture.rules.book import load_automation
    from nurture.sequences.models import check_rule_targets, check_templates, load_book

    pack = load_pack(directory)
    book = load_book(pack)
    problems = check_templates(book, set(template_store(pack).names()))
    targets = [
        (rule.id, str(action.spec.enroll or action.spec.exit))
        for rule in load_automation(pack).rules
        for action in rule.actions
        if action.kind in ("enroll", "exit")
    ]
    problems += check_rule_targets(book, targets)
    if problems:
        raise ConfigError("; ".join(problems))
    return book.summary()
