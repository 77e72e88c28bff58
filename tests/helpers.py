"""Builders the delivery tests share: a ``Delivery`` on the built-in templates, a contact, a
send job. The provider fakes themselves are in ``nurture.testing``."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nurture.clock import Clock
from nurture.core.channels import EmailChannel
from nurture.database.engine import Database
from nurture.messaging.deliver import Delivery, DeliveryConfig
from nurture.messaging.templates import template_store
from nurture.pack import Pack, load_pack
from nurture.storage import contacts as contact_store
from nurture.testing import RecordingSms


@dataclass
class Job:
    key: str
    payload: dict[str, Any]
    attempt: int = 1


def default_pack() -> Pack:
    return load_pack(None, cwd=Path("/nonexistent"))


def make_delivery(
    db: Database, clock: Clock, email: EmailChannel, *, provider_templates: bool = False
) -> Delivery:
    config = DeliveryConfig(
        email_from="Shop <shop@example.com>",
        public_url="https://nurture.example.com",
        unsubscribe_key="test-key",
        provider_templates=provider_templates,
    )
    return Delivery(db, clock, config, template_store(default_pack()), email, RecordingSms())


def new_contact(db: Database, clock: Clock, email: str = "ann@example.com", **traits: Any) -> int:
    with db.begin() as conn:
        return contact_store.create(conn, email, clock.now(), {"first_name": "Ann", **traits}).id


def email_job(contact_id: int, key: str = "rule:1:purchase:1", **extra: Any) -> Job:
    payload: dict[str, Any] = {
        "template": "thank_you",
        "contact_id": contact_id,
        "event_id": None,
        "rule_id": "purchase",
        "enrollment_id": None,
        "step_id": None,
        "transactional": False,
        "vars": {},
    }
    payload.update(extra)
    return Job(key, payload)
