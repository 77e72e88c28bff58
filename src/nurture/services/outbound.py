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
change only the body and signing: see ``services/endpoint_kinds.py``.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from nurture.automation import Pack
from nurture.clock import Clock
from nurture.config import Settings
from nurture.core.channels import WebhookChannel
from nurture.core.retry import RetryPolicy
from nurture.errors import ConfigError, ProviderError
from nurture.providers.standard.outbound import guard_target, webhook_id
from nurture.services.deliver import JobLike, load_event
from nurture.services.endpoint_kinds import DEFAULT_PAYLOADS, build_outgoing
from nurture.services.templates import TemplateError, TemplateStore
from nurture.storage import contacts as contact_store
from nurture.storage import endpoints as endpoint_store
from nurture.storage.engine import Database

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
    # Bodies per kind: services/endpoint_kinds.py (``notion`` endpoints: services/notion_mirror).
    kind: str = Field(default="standard", pattern=r"^(standard|json|discord|slack)$")
    headers: dict[str, str] = Field(default_factory=dict)
    events: list[str] = Field(default_factory=list)
    payload: Any = None
    allow_private: bool = False
    timeout_seconds: float = Field(default=15.0, gt=0, le=60)

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
            continue  # mirrored by services/notion_mirror.py, not a webhook
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
    ) -> None:
        # False only with the recording channel (dry run): even a DNS look-up is a network call.
        self.resolve_targets = resolve_targets
        self.db = db
        self.clock = clock
        self.templates = templates
        self.channel = channel
        self.endpoints = endpoints

    def subscribers(self, event_type: str) -> list[str]:
        """Endpoints that asked for announcements of this type (task.created, ...)."""
        return [name for name, (ep, _) in self.endpoints.items() if event_type in ep.events]

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
        variables: dict[str, Any] = {
            "contact": contact,
            "event": event,
            "rule_id": payload.get("rule_id"),
            **(payload.get("vars") or {}),
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
            data = {"contact": contact, "event": event, "rule_id": payload.get("rule_id")}
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
        started = time.perf_counter()
        try:
            if self.resolve_targets:
                await guard_target(endpoint.url, allow_private=endpoint.allow_private)
            response = await self.channel.post(
                endpoint.url,
                secret if outgoing.signed else "",
                msg_id,
                int(now.timestamp()),
                outgoing.body,
                timeout=endpoint.timeout_seconds,
                headers=outgoing.headers,
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


def enable(db: Database, name: str, now: datetime) -> None:
    """Re-enable an endpoint disabled by a 410 (after the flow is fixed)."""
    with db.begin() as conn:
        endpoint_store.set_disabled(conn, name, None, now)
