"""Outbound webhooks to named endpoints (Power Automate, Zapier, n8n catch hooks).

Endpoints are declared in the automation folder under ``endpoints:``::

    endpoints:
      - name: power-automate
        url: https://prod-00.westeurope.logic.azure.com/workflows/...
        secret_env: NURTURE_POWER_AUTOMATE_SECRET     # or secret: whsec_...
        events: [task.created]                        # announcements this endpoint receives
        payload: {email: "{{ contact.email }}", order: "{{ event.data.order_id }}"}

Each ``webhook`` job POSTs ``{"type", "timestamp", "data"}`` signed with Standard Webhooks; the
``webhook-id`` is stable across retries. 2xx is done; 410 disables the endpoint; 408/429/3xx/5xx
and network errors retry with backoff over hours; other 4xx fail at once. Every attempt is logged
in ``deliveries``. Other ``kind``s (plain ``json`` with ``headers``, ``discord``, ``slack``)
change only the body and signing: see ``endpoint_kinds.py``.

Each endpoint has a token bucket shared by every worker (``rate_per_second``; Discord and Slack
get their documented webhook limits by default), and a 429's ``Retry-After`` pauses it.

An endpoint whose URL comes from an unset variable (``url_env``) is switched off, and switched
off means silent: ``without_switched_off`` drops the rules' ``webhook`` actions that name it
before the rules step is built, and it subscribes to no announcements, so no job is ever
enqueued for it (the default pack's hot-lead alert with neither Discord nor Slack configured).
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import logging
import re
import time
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

from pydantic import BaseModel, ConfigDict, Field, model_validator

from nurture.clock import Clock
from nurture.config import Settings
from nurture.core.channels import WebhookChannel
from nurture.core.contacts import ContactState
from nurture.core.retry import RetryPolicy
from nurture.database.engine import Database
from nurture.errors import ConfigError, ProviderError
from nurture.integrations.endpoint_kinds import DEFAULT_PAYLOADS, DEFAULT_RATES, build_outgoing
from nurture.messaging.deliver import JobLike, load_event
from nurture.messaging.ratelimit import RateLimiter
from nurture.messaging.templates import TemplateError, TemplateStore
from nurture.pack import Pack, load_pack
from nurture.providers.standard.outbound import guard_target, webhook_id
from nurture.rules.book import Automation, load_automation
from nurture.rules.dryrun import dry_run
from nurture.storage import contacts as contact_store
from nurture.storage import endpoints as endpoint_store

log = logging.getLogger("nurture.outbound")

# Standard Webhooks' suggested schedule spreads retries over about a day.
WEBHOOK_RETRY = RetryPolicy(base_seconds=5.0, factor=4.0, max_seconds=6 * 3600.0, max_attempts=10)
EVENT_TYPE = re.compile(r"^[a-zA-Z0-9_]+(\.[a-zA-Z0-9_]+)*$")


class Endpoint(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,99}$")
    # ``url`` or ``url_env`` (resolved by ``load_endpoints``; unset variable: switched off).
    url: str | None = Field(default=None, pattern=r"^https?://")
    url_env: str | None = Field(default=None, pattern=r"^NURTURE_[A-Z0-9_]+$")
    secret: str | None = Field(default=None, repr=False)
    secret_env: str | None = Field(default=None, pattern=r"^NURTURE_[A-Z0-9_]+$")
    # Bodies per kind: endpoint_kinds.py (``notion`` endpoints: notion.py).
    kind: str = Field(default="standard", pattern=r"^(standard|json|discord|slack)$")
    headers: dict[str, str] = Field(default_factory=dict)
    events: list[str] = Field(default_factory=list)
    payload: Any = None
    allow_private: bool = False
    timeout_seconds: float = Field(default=15.0, gt=0, le=60)
    # Requests per second shared by every worker; unset: the kind's default, 0: no limit.
    rate_per_second: float | None = Field(default=None, ge=0, le=1000)
    burst: int | None = Field(default=None, ge=1, le=1000)

    @property
    def rate(self) -> tuple[float, int]:
        """``(requests per second, burst)``; a rate of 0 means no limit."""
        default_rate, default_burst = DEFAULT_RATES.get(self.kind, (0.0, 1))
        rate = default_rate if self.rate_per_second is None else self.rate_per_second
        burst = self.burst or (default_burst if self.rate_per_second is None else int(rate))
        return rate, max(1, burst)

    @model_validator(mode="after")
    def _secret_source(self) -> Endpoint:
        if self.kind == "standard" and (self.secret is None) == (self.secret_env is None):
            raise ValueError("give exactly one of secret or secret_env")
        if self.secret is not None and self.secret_env is not None:
            raise ValueError("give at most one of secret or secret_env")
        if (self.url is None) == (self.url_env is None):
            raise ValueError("give exactly one of url or url_env")
        bad = [e for e in self.events if not EVENT_TYPE.match(e)]
        if bad:
            raise ValueError(f"event types must look like noun.verb: {', '.join(bad)}")
        return self


def load_endpoints(pack: Pack, settings: Settings) -> dict[str, tuple[Endpoint, str]]:
    """Validate the ``endpoints:`` section; resolve each secret. Errors name file and line."""
    out: dict[str, tuple[Endpoint, str]] = {}
    for located, index, item in pack.items("endpoints"):
        if isinstance(item, dict) and item.get("kind") == "notion":
            continue  # mirrored by integrations/notion.py, not a webhook
        endpoint = pack.validate_item(located, index, Endpoint, item)
        if endpoint.url_env is not None:
            urls = settings.secret_values(endpoint.url_env)
            endpoint = endpoint.model_copy(update={"url": urls[0] if urls else None})
        if endpoint.name in out:
            raise ConfigError(
                f"{located.where((index, 'name'))}: endpoint {endpoint.name!r} is declared twice"
            )
        if endpoint.secret is not None:
            secret = endpoint.secret
        elif endpoint.secret_env is None:
            secret = ""  # an unsigned kind (json without a secret, discord, slack)
        else:
            values = settings.secret_values(endpoint.secret_env)
            if not values:
                raise ConfigError(
                    f"{located.where((index, 'secret_env'))}: endpoint {endpoint.name!r} needs "
                    f"{endpoint.secret_env} to be set"
                )
            secret = values[0]
        out[endpoint.name] = (endpoint, secret)
    return out


def switched_off(endpoints: Mapping[str, tuple[Endpoint, str]]) -> dict[str, str]:
    """Endpoints with no URL (their ``url_env`` is unset): ``{name: variable}``."""
    return {name: str(ep.url_env) for name, (ep, _) in endpoints.items() if ep.url is None}


def without_switched_off(
    automation: Automation, endpoints: Mapping[str, tuple[Endpoint, str]]
) -> tuple[Automation, list[str]]:
    """The automation minus ``webhook`` actions naming a switched-off endpoint, and the ids of
    the rules that lost some. A rule left with no action is disabled: it was only an alert to
    nobody. Kept actions keep their index, so job keys do not depend on the configuration."""
    off = switched_off(endpoints)
    if not off:
        return automation, []
    rules = []
    changed: list[str] = []
    for rule in automation.rules:
        kept = tuple(a for a in rule.actions if not (a.kind == "webhook" and a.spec.webhook in off))
        if len(kept) == len(rule.actions):
            rules.append(rule)
            continue
        changed.append(rule.id)
        if kept:
            rules.append(dataclasses.replace(rule, actions=kept))
        else:
            spec = rule.spec.model_copy(update={"enabled": False})
            rules.append(dataclasses.replace(rule, spec=spec))
    # ``replace`` keeps every other part of the automation and re-indexes the rules.
    return dataclasses.replace(automation, rules=rules), changed


def as_the_worker_runs_it(
    automation: Automation, pack: Pack, settings: Settings
) -> tuple[Automation, dict[str, str]]:
    """The automation the worker runs (``silence_switched_off``'s pruning) and the switched-off
    endpoints that lost actions, ``{name: variable}``: a dry run must show what would happen,
    not a webhook that is never sent."""
    endpoints = load_endpoints(pack, settings)
    pruned, changed = without_switched_off(automation, endpoints)
    return pruned, (switched_off(endpoints) if changed else {})


def dry_run_as_run(
    settings: Settings,
    automation: Automation,
    event: Mapping[str, Any],
    contact: ContactState,
    now: datetime,
    history: Mapping[str, datetime] | None = None,
    *,
    directory: Path | None = None,
) -> dict[str, Any]:
    """``rules.dryrun.dry_run`` on the automation as the worker runs it; the result names the
    switched-off endpoints whose actions were left out (``switched_off_endpoints``)."""
    pack = load_pack(directory or settings.automation_dir)
    pruned, off = as_the_worker_runs_it(automation, pack, settings)
    result = dry_run(pruned, event, contact, now, history)
    if off:
        result["switched_off_endpoints"] = off
    return result


class _HasAutomation(Protocol):
    automation: Automation


def silence_switched_off(step: _HasAutomation, pack: Pack, settings: Settings) -> None:
    """Give the rules step an automation without actions for switched-off endpoints (at start,
    from ``bootstrap.build_steps``); one log line says what was dropped and which variable
    would switch the endpoint on."""
    endpoints = load_endpoints(pack, settings)
    step.automation, changed = without_switched_off(step.automation, endpoints)
    if changed:
        off = switched_off(endpoints)
        log.info(
            "endpoints switched off (their URL variable is unset): no webhook jobs for them",
            extra={
                "action": "webhook.switched_off",
                "endpoints": sorted(off),
                "variables": sorted(set(off.values())),
                "rules": changed,
            },
        )


def check_endpoints(pack: Pack, settings: Settings) -> str:
    """``nurture check``: validate ``endpoints:`` (every kind) and that each rule's ``webhook:``
    names a declared endpoint; a summary line. A switched-off endpoint is reported, not an
    error: leaving ``NURTURE_DISCORD_WEBHOOK_URL`` unset is how the alert is turned off."""
    from nurture.integrations.notion import load_notion_endpoints

    hooks = load_endpoints(pack, settings)
    notion = load_notion_endpoints(pack, settings)
    declared = set(hooks) | set(notion)
    for rule in load_automation(pack).rules:
        for action in rule.actions:
            target = action.spec.webhook
            if action.kind == "webhook" and target not in hooks:
                what = "a Notion mirror, not a webhook" if target in notion else "not declared"
                raise ConfigError(
                    f"{rule.where}: rule {rule.id!r}: webhook: endpoint {target!r} is {what} "
                    f"(endpoints: {', '.join(sorted(hooks)) or 'none'})"
                )
    off = switched_off(hooks)
    summary = f"{len(declared)} endpoints"
    if off:
        summary += (
            " (switched off, variable unset: "
            + ", ".join(f"{name} <- {var}" for name, var in sorted(off.items()))
            + ")"
        )
    return summary


def render_tree(
    templates: TemplateStore, node: Any, variables: Mapping[str, Any], where: str
) -> Any:
    """Render every string of a payload template; keep its shape (mappings, lists, scalars)."""
    if isinstance(node, str):
        return templates.render_string(node, variables, where=where)
    if isinstance(node, Mapping):
        return {
            str(k): render_tree(templates, v, variables, f"{where}.{k}") for k, v in node.items()
        }
    if isinstance(node, list):
        return [render_tree(templates, v, variables, f"{where}[{i}]") for i, v in enumerate(node)]
    return node


class Outbound:
    """The ``webhook`` job handler."""

    def __init__(
        self,
        db: Database,
        clock: Clock,
        templates: TemplateStore,
        channel: WebhookChannel,
        endpoints: dict[str, tuple[Endpoint, str]],
        *,
        resolve_targets: bool = True,
        rate_limited: bool = True,
    ) -> None:
        # False only with the recording channel (dry run): even a DNS look-up is a network call.
        self.resolve_targets = resolve_targets
        self.db = db
        self.clock = clock
        self.templates = templates
        self.channel = channel
        self.endpoints = endpoints
        self.limiters: dict[str, RateLimiter] = {}
        for name, (endpoint, _) in endpoints.items():
            rate, burst = endpoint.rate
            if rate_limited and rate > 0:
                self.limiters[name] = RateLimiter(db, clock, limiter_name(name), rate, burst)

    def subscribers(self, event_type: str) -> list[str]:
        """Endpoints that asked for announcements of this type (task.created, ...); switched-off
        endpoints ask for nothing."""
        return [
            name
            for name, (ep, _) in self.endpoints.items()
            if event_type in ep.events and ep.url is not None
        ]

    async def send_webhook(self, job: JobLike) -> None:
        payload = job.payload
        name = str(payload.get("endpoint") or "")
        found = self.endpoints.get(name)
        if found is None:
            raise ProviderError(
                f"webhook: no endpoint named {name!r} in the automation folder", permanent=True
            )
        endpoint, secret = found
        if endpoint.url is None:
            log.info(
                "endpoint switched off (its URL variable is unset); nothing sent",
                extra={"action": "webhook.off", "endpoint": name, "url_env": endpoint.url_env},
            )
            return
        state, contact, event = await asyncio.to_thread(self._load, name, payload)
        if state is not None:
            raise ProviderError(
                f"webhook: endpoint {name!r} is disabled since "
                f"{state['disabled_at']:%Y-%m-%d %H:%M} ({state['disabled_reason']})",
                permanent=True,
            )
        now = self.clock.now()
        event_type = str(payload.get("type") or (event or {}).get("type") or "nurture.webhook")
        extra = payload.get("vars") or {}
        variables: dict[str, Any] = {
            "type": event_type,
            "contact": contact,
            "event": event,
            "rule_id": payload.get("rule_id"),
            **extra,
        }
        template = endpoint.payload
        if template is None:
            template = DEFAULT_PAYLOADS.get(endpoint.kind)
        if payload.get("body") is not None:
            data = payload["body"]
        elif template is not None:
            try:
                data = render_tree(self.templates, template, variables, f"endpoint {name} payload")
            except TemplateError as exc:
                raise ProviderError(str(exc), permanent=True) from exc
        else:
            # No template: the facts themselves, and whatever the sender added (a task
            # announcement's ``task``), so a flow gets everything without configuring a payload.
            data = {"contact": contact, "event": event, "rule_id": payload.get("rule_id"), **extra}
        timestamp = (event or {}).get("occurred_at") or now.isoformat()
        outgoing = build_outgoing(
            endpoint.kind,
            event_type=event_type,
            timestamp=timestamp,
            data=data,
            headers=endpoint.headers,
            has_secret=bool(secret),
        )
        msg_id = webhook_id(job.key)
        log_row = {
            "endpoint": name,
            "job_key": job.key,
            "webhook_id": msg_id,
            "event_type": event_type[:128],
            "attempt": job.attempt,
        }
        limiter = self.limiters.get(name)
        if limiter is not None:
            await limiter.acquire()
        started = time.perf_counter()
        try:
            address = None
            if self.resolve_targets:
                # The checked address is the one connected to: no second, different answer.
                address = await guard_target(endpoint.url, allow_private=endpoint.allow_private)
            response = await self.channel.post(
                endpoint.url,
                secret if outgoing.signed else "",
                msg_id,
                int(now.timestamp()),
                outgoing.body,
                timeout=endpoint.timeout_seconds,
                headers=outgoing.headers,
                connect_to=address,
            )
        except ProviderError as exc:
            await asyncio.to_thread(self._log, log_row, None, str(exc), started)
            raise
        status = response.status_code
        if 200 <= status < 300:
            await asyncio.to_thread(self._log, log_row, status, None, started)
            return
        error = f"HTTP {status}: {response.body[:200]}"
        await asyncio.to_thread(self._log, log_row, status, error, started)
        if status == 410:
            await asyncio.to_thread(self._disable, name, f"answered 410 Gone to {msg_id}")
            log.warning(
                "endpoint disabled after 410",
                extra={"action": "webhook.disabled", "endpoint": name},
            )
            raise ProviderError(f"webhook {name}: 410 Gone, endpoint disabled", permanent=True)
        if status in (408, 425, 429) or status >= 500 or 300 <= status < 400:
            if status == 429 and limiter is not None:
                # The receiver throttles the endpoint: every worker's deliveries to it wait.
                await limiter.pause(response.retry_after)
            raise ProviderError(f"webhook {name}: {error}", retry_after=response.retry_after)
        raise ProviderError(f"webhook {name}: {error}", permanent=True)

    def _load(
        self, name: str, payload: Mapping[str, Any]
    ) -> tuple[dict[str, Any] | None, dict[str, Any] | None, dict[str, Any] | None]:
        with self.db.read() as conn:
            state = endpoint_store.disabled(conn, name)
            contact_id = payload.get("contact_id")
            contact = contact_store.load(conn, int(contact_id)) if contact_id is not None else None
            event = load_event(conn, payload.get("event_id"))
        return state, contact.view() if contact is not None else None, event

    def _log(
        self, row: dict[str, Any], status: int | None, error: str | None, started: float
    ) -> None:
        with self.db.begin() as conn:
            endpoint_store.log_delivery(
                conn,
                {
                    **row,
                    "status_code": status,
                    "error": error,
                    "duration_ms": int((time.perf_counter() - started) * 1000),
                    "at": self.clock.now(),
                },
            )

    def _disable(self, name: str, reason: str) -> None:
        with self.db.begin() as conn:
            endpoint_store.set_disabled(conn, name, reason, self.clock.now())


def limiter_name(endpoint: str) -> str:
    # ``rate_limits.name`` holds 64 characters; endpoint names may have 100.
    name = f"webhook:{endpoint}"
    return name if len(name) <= 64 else "webhook:" + hashlib.sha256(name.encode()).hexdigest()[:40]


def enable(db: Database, name: str, now: datetime) -> None:
    """Re-enable an endpoint disabled by a 410 (after the flow is fixed)."""
    with db.begin() as conn:
        endpoint_store.set_disabled(conn, name, None, now)
