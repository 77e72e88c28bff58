"""The one composition root: settings in, a wired ``Container`` out.

Everything the web app, the worker and the CLI need is built here, once, from ``Settings``.
Feature packages register their pieces in the ``build_*`` functions; nothing else wires things,
and nothing below this package imports it: each handler and step is given the few
collaborators it uses (``delivery`` picks the channel of each port).
"""

from __future__ import annotations

from dataclasses import dataclass

from nurture import sequences
from nurture.automation import schedule as rule_schedule
from nurture.automation import step as rules
from nurture.bootstrap.delivery import build_delivery
from nurture.bootstrap.delivery import check_settings as check_delivery_settings
from nurture.bootstrap.delivery import register as register_delivery
from nurture.clock import Clock, SystemClock
from nurture.commerce import purchases
from nurture.config import Settings
from nurture.contacts.bookings import BookingStep
from nurture.contacts.consent import ConsentStep
from nurture.database.engine import Database
from nurture.intake.context import Step
from nurture.intake.process import EventProcessor
from nurture.integrations import notion, tasks
from nurture.integrations.outbound import silence_switched_off
from nurture.jobs import HandlerRegistry, JobWorker
from nurture.jobs.worker import WorkerLoop
from nurture.logs import register_secrets
from nurture.messaging.email_status import EmailStatusStep
from nurture.messaging.unsubscribe import confirm_url, signing_key
from nurture.pack import load_pack
from nurture.retention import prune as retention


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
        db=db
        or Database(
            settings.database_url,
            busy_timeout_ms=settings.db_busy_timeout_ms,
            dead_client_seconds=settings.db_dead_client_seconds,
        ),
        clock=clock or SystemClock(),
    )


def build_steps(container: Container) -> list[Step]:
    """The processing pipeline, in order. Feature packages add their step here."""
    s = container.settings
    pack = load_pack(s.automation_dir)
    key = signing_key(s)
    steps: list[Step] = [
        EmailStatusStep(),  # bounces/unsubscribes first: later steps see the status
        # Consent and the double opt-in's ``pending`` status, before any rule could mail.
        ConsentStep(lambda consent_id: confirm_url(s.public_url, key, consent_id)),
        BookingStep(),  # booking_status/call_date, before rules read them
        purchases.build_purchase_step(s.automation_dir),  # orders + RFM, before rules read them
    ]
    # Rules read what earlier steps computed (RFM) and leave markers for later ones (sequences).
    rules_step = rules.build_rules_step(s.automation_dir, s.time_scale)
    silence_switched_off(rules_step, pack, s)  # no job for an endpoint whose URL is unset
    steps.append(rules_step)
    steps.append(sequences.build_sequences_step(s.automation_dir, s.time_scale))  # reads markers
    mirror = notion.build_step(pack, s)
    if mirror is not None:
        steps.append(mirror)  # last: mirrors the contact as this event leaves it
    return steps


def build_registry(container: Container) -> HandlerRegistry:
    """Job handlers by kind. Feature packages register theirs here (``registry.register``)."""
    s, db, clock = container.settings, container.db, container.clock
    registry = HandlerRegistry()
    purchases.register_jobs(registry, db, s.automation_dir)
    delivery = build_delivery(s, db, clock)
    register_delivery(registry, delivery)
    sequences.register(  # sends through the same delivery service as the rules
        registry,
        db,
        clock,
        delivery.delivery,
        automation_dir=s.automation_dir,
        time_scale=s.time_scale,
        partitions=s.partitions,
    )
    tasks.register(registry, db, delivery.outbound.subscribers)  # announces task.created
    rule_schedule.register(registry, db, s.automation_dir, s.partitions)
    rules.register(registry, db, s.automation_dir)  # delayed score/tag/set ... (``after:``)
    notion.register(registry, db, clock, load_pack(s.automation_dir), s)
    retention.register(registry, db, s)  # the recurring pruning pass (NURTURE_RETENTION_*)
    return registry


def build_job_worker(container: Container) -> JobWorker:
    return JobWorker(container, build_registry(container))


def build_worker_loops(container: Container) -> list[WorkerLoop]:
    """What a worker process runs beside event processing: the job scheduler, and the loops
    that queue the next tick of every scheduled rule and the next pruning pass at start."""
    s = container.settings
    return [
        build_job_worker(container).run,
        rule_schedule.schedule_loop(container.db, container.clock, s.automation_dir),
        retention.schedule_loop(container.db, container.clock, s),
    ]


def build_processor(container: Container) -> EventProcessor:
    s = container.settings
    return EventProcessor(
        container.db,
        container.clock,
        build_steps(container),
        batch_size=s.process_batch_size,
        partitions=s.partitions,
    )
