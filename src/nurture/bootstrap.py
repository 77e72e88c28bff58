"""The one composition root: settings in, a wired ``Container`` out.

Everything the web app, the worker and the CLI need is built here, once, from ``Settings``.
Feature packages register their pieces in the ``build_*`` functions; nothing else wires things.
"""

from __future__ import annotations

from dataclasses import dataclass

from nurture.clock import Clock, SystemClock
from nurture.config import Settings
from nurture.jobs import HandlerRegistry, JobWorker
from nurture.logs import register_secrets
from nurture.services.context import Step
from nurture.services.process import EventProcessor
from nurture.storage.engine import Database


@dataclass
class Container:
    settings: Settings
    db: Database
    clock: Clock

    def close(self) -> None:
        self.db.dispose()


def build_container(
    settings: Settings, *, clock: Clock | None = None, db: Database | None = None
) -> Container:
    from nurture.delivery import check_settings as check_delivery_settings

    check_delivery_settings(settings)
    register_secrets(
        [
            settings.brevo_api_key,
            settings.resend_api_key,
            settings.smtp_url,
            *settings.track_secrets,
            *settings.write_key_list,
            settings.secret_key,
            *settings.all_source_secrets,
            settings.discord_webhook_url,
            settings.slack_webhook_url,
        ]
    )
    return Container(
        settings=settings,
        db=db or Database(settings.database_url, busy_timeout_ms=settings.db_busy_timeout_ms),
        clock=clock or SystemClock(),
    )


def build_steps(container: Container) -> list[Step]:
    """The processing pipeline, in order. Feature packages add their step here."""
    from nurture.services.rules import build_rules_step

    s = container.settings
    steps: list[Step] = []
    from nurture.services.email_status import EmailStatusStep

    steps.append(EmailStatusStep())  # bounces/unsubscribes first: later steps see the status
    from nurture.services.bookings import BookingStep

    steps.append(BookingStep())  # booking_status/call_date, before rules read them
    from nurture.services.commerce import build_purchase_step

    steps.append(build_purchase_step(s.automation_dir))  # orders + RFM, before rules read them
    # Rules read what earlier steps computed (RFM) and leave markers for later ones (sequences).
    rules = build_rules_step(s.automation_dir, s.time_scale)
    from nurture.automation import load_pack
    from nurture.services.outbound import silence_switched_off

    pack = load_pack(s.automation_dir)
    silence_switched_off(rules, pack, s)  # no job for an endpoint whose URL is unset
    steps.append(rules)
    from nurture.services.sequences import build_sequences_step

    steps.append(build_sequences_step(s.automation_dir, s.time_scale))  # reads the rules' markers
    from nurture.services.notion_mirror import build_step as build_notion_step

    notion = build_notion_step(pack, s)
    if notion is not None:
        steps.append(notion)  # last: mirrors the contact as this event leaves it
    return steps


def build_registry(container: Container) -> HandlerRegistry:
    """Job handlers by kind. Feature packages register theirs here (``registry.register``)."""
    registry = HandlerRegistry()
    from nurture.services.commerce import register_jobs as register_commerce_jobs

    register_commerce_jobs(registry)
    from nurture.delivery import build_delivery
    from nurture.delivery import register as register_delivery

    delivery = build_delivery(container.settings, container.db, container.clock)
    register_delivery(registry, delivery)
    from nurture.services.sequences import register as register_sequence_jobs

    register_sequence_jobs(registry, container, delivery.delivery)  # sends through the same service
    from nurture.services.tasks import register as register_task_jobs

    register_task_jobs(registry, delivery.outbound.subscribers)  # announces task.created
    from nurture.services.rule_schedule import register as register_rule_schedule

    register_rule_schedule(registry)
    from nurture.services.rules import register as register_rule_actions

    register_rule_actions(registry)  # delayed score/tag/set ... actions (``after:``)
    from nurture.automation import load_pack
    from nurture.services.notion_mirror import register as register_notion

    s = container.settings
    register_notion(registry, container.db, container.clock, load_pack(s.automation_dir), s)
    return registry


def build_job_worker(container: Container) -> JobWorker:
    return JobWorker(container, build_registry(container))


def build_processor(container: Container) -> EventProcessor:
    s = container.settings
    return EventProcessor(
        container.db,
        container.clock,
        build_steps(container),
        batch_size=s.process_batch_size,
        partitions=s.partitions,
    )
