"""The Notion mirror: one page per contact in a Notion database, nurture's database the truth.

An endpoint of ``kind: notion`` in the automation folder::

    endpoints:
      - name: notion-contacts
        kind: notion
        secret_env: NURTURE_NOTION_TOKEN        # the integration's token
        database_id: 1f2e3d4c5b6a79808f7e6d5c4b3a2910
        key: Email                              # the property pages are found by
        properties:
          Email: {type: email, from: contact.email}
          Name: {type: title, value: "{{ contact.first_name }} {{ contact.last_name }}"}
          Segment: {type: select, from: contact.segments.assessment}
          Email 1 Sent: {type: date, from: emails.christmas_email_1.sent_at}

``from:`` reads a value (``contact``, ``emails.<template>``, ``steps.<step id>``, ``now``);
``value:`` is a template over the same variables (missing values render empty, which clears
the property).

How it keeps up: a processing step notes every event's contact as changed and schedules one
``notion_sync`` job per contact a few seconds out (``coalesce``); the job key carries a counter
the job bumps when it starts, so a burst of events shares one job and one write, and a change
made while a sync runs queues the next. The job reads the contact as it is then, skips the
write when nothing changed since the last one, finds the page by the key property once (then
remembers it), and creates or updates it. E-mails scheduled for the contact get a follow-up
sync after they are due, so their sent dates reach Notion. Every request takes a token from
a bucket shared by all workers (rows in the database), 3 per second per integration by
default, Notion's documented average; a 429's ``Retry-After`` empties that bucket for as long,
so every worker waits it out, and the job itself retries after it. Nothing on the request path
waits for Notion.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any, Literal

import httpx
import orjson
from jinja2 import ChainableUndefined
from jinja2.sandbox import SandboxedEnvironment
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from nurture import jobs
from nurture.clock import Clock
from nurture.config import Settings
from nurture.core.durations import parse_duration
from nurture.core.retry import RetryPolicy
from nurture.database.engine import Database
from nurture.errors import ConfigError, ProviderError
from nurture.intake.context import ProcessingContext
from nurture.messaging.ratelimit import RateLimiter
from nurture.pack import Pack
from nurture.providers.http import new_client
from nurture.providers.notion.outbound import (
    API_URL,
    KEY_TYPES,
    NOTION_VERSION,
    NotionClient,
    PageGone,
    RateLimited,
    key_filter,
    property_value,
)
from nurture.storage import contacts as contact_store
from nurture.storage import jobs as job_store
from nurture.storage import messages as message_store
from nurture.storage import notion as notion_store

log = logging.getLogger("nurture.notion")

JOB_KIND = "notion_sync"
# Rate-limit waits and 429s are retries too: allow many, spaced out.
NOTION_RETRY = RetryPolicy(base_seconds=2.0, factor=2.0, max_seconds=600.0, max_attempts=25)
PENDING_SEND_STATUSES = ("scheduled", "failed", "running")
# Jobs that send an e-mail: a rule's ``send_email`` and a sequence's step.
SEND_KINDS = ("send_email", "sequence_step")
MESSAGE_SCAN_LIMIT = 500


class NotionProperty(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    type: Literal[
        "title",
        "rich_text",
        "email",
        "number",
        "select",
        "multi_select",
        "date",
        "checkbox",
        "url",
        "phone_number",
    ]
    from_: str | None = Field(None, alias="from", pattern=r"^[A-Za-z_][\w.\- ]*$")
    value: str | None = None

    @model_validator(mode="after")
    def _one_source(self) -> NotionProperty:
        if (self.from_ is None) == (self.value is None):
            raise ValueError("give exactly one of from: (a path) or value: (a template)")
        return self


class NotionEndpoint(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,99}$")
    kind: Literal["notion"]
    secret_env: str = Field(pattern=r"^NURTURE_[A-Z0-9_]+$")
    database_id: str = Field(pattern=r"^[0-9a-fA-F-]{32,36}$")
    key: str = Field(min_length=1)
    properties: dict[str, NotionProperty] = Field(min_length=1)
    url: str = Field(default=API_URL, pattern=r"^https?://")
    notion_version: str = NOTION_VERSION
    coalesce: timedelta = timedelta(seconds=5)
    rate_per_second: float = Field(default=3.0, gt=0, le=100)
    timeout_seconds: float = Field(default=15.0, gt=0, le=60)

    @field_validator("coalesce", mode="before")
    @classmethod
    def _coalesce(cls, value: Any) -> timedelta:
        return parse_duration(value)

    @model_validator(mode="after")
    def _key(self) -> NotionEndpoint:
        prop = self.properties.get(self.key)
        if prop is None:
            raise ValueError(f"key {self.key!r} must be one of the properties")
        if prop.type not in KEY_TYPES:
            raise ValueError(f"key property {self.key!r} must be of type {', '.join(KEY_TYPES)}")
        return self


def load_notion_endpoints(pack: Pack, settings: Settings) -> dict[str, tuple[NotionEndpoint, str]]:
    """The ``kind: notion`` items of ``endpoints:``, each with its token. Errors name file:line."""
    out: dict[str, tuple[NotionEndpoint, str]] = {}
    for located, index, item in pack.items("endpoints"):
        if not isinstance(item, dict) or item.get("kind") != "notion":
            continue
        endpoint = pack.validate_item(located, index, NotionEndpoint, item)
        if endpoint.name in out:
            raise ConfigError(
                f"{located.where((index, 'name'))}: endpoint {endpoint.name!r} is declared twice"
            )
        tokens = settings.secret_values(endpoint.secret_env)
        if not tokens:
            raise ConfigError(
                f"{located.where((index, 'secret_env'))}: endpoint {endpoint.name!r} needs "
                f"{endpoint.secret_env} (the Notion integration token) to be set"
            )
        out[endpoint.name] = (endpoint, tokens[0])
    return out


# -- properties -------------------------------------------------------------------------------

_strings = SandboxedEnvironment(undefined=ChainableUndefined, autoescape=False)


def lookup(variables: Mapping[str, Any], path: str) -> Any:
    node: Any = variables
    for part in path.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    return node


def _plain(value: Any) -> Any:
    return value.isoformat() if isinstance(value, datetime) else value


def mirror_variables(
    contact: Mapping[str, Any], messages: list[dict[str, Any]], now: datetime
) -> dict[str, Any]:
    """``contact``, ``emails`` (by template: the latest sent), ``steps`` (by sequence step)."""
    emails: dict[str, dict[str, Any]] = {}
    steps: dict[str, dict[str, Any]] = {}
    for m in sorted(messages, key=lambda m: m["id"]):
        if m["channel"] != "email" or m["sent_at"] is None:
            continue
        info = {"sent_at": _plain(m["sent_at"]), "subject": m["subject"], "status": m["status"]}
        if m["template"]:
            emails[str(m["template"])] = info
        if m["step_id"]:
            steps[str(m["step_id"])] = info
    return {"contact": dict(contact), "emails": emails, "steps": steps, "now": now.isoformat()}


def render_properties(
    endpoint: NotionEndpoint, variables: Mapping[str, Any]
) -> tuple[dict[str, Any], Any]:
    """Notion property JSON for every mapped property, and the key property's raw value."""
    out: dict[str, Any] = {}
    key_value: Any = None
    for name, prop in endpoint.properties.items():
        if prop.from_ is not None:
            value = _plain(lookup(variables, prop.from_))
        else:
            assert prop.value is not None
            value = _strings.from_string(prop.value).render(**variables).strip()
        try:
            out[name] = property_value(prop.type, value)
        except ValueError as exc:
            raise ProviderError(
                f"notion endpoint {endpoint.name}: property {name!r}: {exc}", permanent=True
            ) from None
        if name == endpoint.key:
            key_value = value
    return out, key_value


def digest(properties: Mapping[str, Any]) -> str:
    return hashlib.sha256(orjson.dumps(properties, option=orjson.OPT_SORT_KEYS)).hexdigest()


# -- the step ---------------------------------------------------------------------------------


class NotionMirrorStep:
    """Schedules (or joins) the contact's pending sync for every Notion endpoint."""

    name = "notion-mirror"

    def __init__(self, endpoints: Mapping[str, NotionEndpoint]) -> None:
        self.endpoints = dict(endpoints)

    def apply(self, ctx: ProcessingContext) -> None:
        contact = ctx.contact
        if contact is None or not self.endpoints:
            return
        for name, endpoint in self.endpoints.items():
            seq = notion_store.request_sync(ctx.conn, name, contact.id, ctx.now)
            jobs.enqueue(
                ctx.conn,
                kind=JOB_KIND,
                key=f"notion:{name}:{contact.id}:{seq}",
                run_at=ctx.now + endpoint.coalesce,
                payload={"endpoint": name, "contact_id": contact.id},
                contact_id=contact.id,
            )


# -- the job ----------------------------------------------------------------------------------


class NotionMirror:
    """The ``notion_sync`` job handler."""

    def __init__(
        self,
        db: Database,
        clock: Clock,
        endpoints: Mapping[str, tuple[NotionEndpoint, str]],
        client: httpx.AsyncClient,
        *,
        max_wait: float = 5.0,
    ) -> None:
        self.db = db
        self.clock = clock
        self.endpoints = dict(endpoints)
        self.client = client
        self.limiters = {
            name: RateLimiter(
                db,
                clock,
                # Notion limits per integration: endpoints sharing a token share the bucket.
                "notion:" + hashlib.sha256(token.encode()).hexdigest()[:16],
                endpoint.rate_per_second,
                max(1, int(endpoint.rate_per_second)),
                max_wait=max_wait,
            )
            for name, (endpoint, token) in self.endpoints.items()
        }

    def notion(self, name: str) -> NotionClient:
        endpoint, token = self.endpoints[name]
        return NotionClient(
            self.client,
            token,
            api_url=endpoint.url,
            version=endpoint.notion_version,
            before_request=self.limiters[name].acquire,
            timeout=endpoint.timeout_seconds,
        )

    async def sync(self, job: Any) -> None:
        payload = job.payload
        name = str(payload.get("endpoint") or "")
        if name not in self.endpoints:
            raise ProviderError(f"notion: no endpoint named {name!r}", permanent=True)
        endpoint, _ = self.endpoints[name]
        contact_id = int(payload["contact_id"])
        loaded = await asyncio.to_thread(self._load, name, contact_id)
        if loaded is None:
            return  # the contact was erased: nothing to mirror
        row, variables = loaded
        properties, key_value = render_properties(endpoint, variables)
        if key_value in (None, ""):
            log.info(
                "notion: contact has no key value, not mirrored",
                extra={"action": "notion.skipped", "endpoint": name, "contact_id": contact_id},
            )
            return
        page_id = row["page_id"]
        fingerprint = digest(properties)
        if page_id and row["synced_hash"] == fingerprint:
            await asyncio.to_thread(self._follow_up, name, endpoint, contact_id)
            return
        notion = self.notion(name)
        kind = endpoint.properties[endpoint.key].type
        try:
            page_id = await self._write(
                notion,
                name,
                endpoint,
                contact_id,
                page_id,
                properties,
                key_filter(endpoint.key, kind, str(key_value)),
            )
        except RateLimited as exc:
            # Notion throttles the integration: hold the shared bucket so no worker asks
            # again before Retry-After (without one, the bucket's own pace resumes).
            await self.limiters[name].pause(exc.retry_after)
            raise
        await asyncio.to_thread(self._done, name, contact_id, page_id, fingerprint)
        await asyncio.to_thread(self._follow_up, name, endpoint, contact_id)

    async def _write(
        self,
        notion: NotionClient,
        name: str,
        endpoint: NotionEndpoint,
        contact_id: int,
        page_id: str | None,
        properties: dict[str, Any],
        key: dict[str, Any],
    ) -> str:
        # ``page_id``: None = never looked up, "" = looked up and absent. Each answer is kept
        # at once, so an attempt cut short by the rate limit resumes where it stopped instead
        # of spending the shared budget on the same query again.
        if page_id:
            try:
                await notion.update_page(page_id, properties)
                return page_id
            except PageGone:
                page_id = None
        if page_id is None:
            found = await notion.find_page(endpoint.database_id, key)
            await asyncio.to_thread(self._remember, name, contact_id, found or "")
            if found is not None:
                await notion.update_page(found, properties)
                return found
        created = await notion.create_page(endpoint.database_id, properties)
        await asyncio.to_thread(self._remember, name, contact_id, created)
        return created

    # -- database ---------------------------------------------------------------------------

    def _load(self, name: str, contact_id: int) -> tuple[dict[str, Any], dict[str, Any]] | None:
        with self.db.begin() as conn:
            row = notion_store.start_sync(conn, name, contact_id)
            if row is None:
                return None
        # A fresh transaction: it sees every change committed before the claim above.
        with self.db.read() as conn:
            contact = contact_store.load(conn, contact_id)
            if contact is None:
                return None
            messages = message_store.for_contact(conn, contact_id, limit=MESSAGE_SCAN_LIMIT)
        return row, mirror_variables(contact.view(), messages, self.clock.now())

    def _remember(self, name: str, contact_id: int, page_id: str | None) -> None:
        with self.db.begin() as conn:
            notion_store.set_page(conn, name, contact_id, page_id)

    def _done(self, name: str, contact_id: int, page_id: str, fingerprint: str) -> None:
        with self.db.begin() as conn:
            notion_store.mark_synced(conn, name, contact_id, page_id, fingerprint, self.clock.now())

    def _follow_up(self, name: str, endpoint: NotionEndpoint, contact_id: int) -> None:
        """Sync again once the contact's next e-mail is due, so its sent date is mirrored."""
        now = self.clock.now()
        with self.db.begin() as conn:
            pending = [
                j
                for kind in SEND_KINDS
                for status in PENDING_SEND_STATUSES
                for j in job_store.search(
                    conn, status=status, kind=kind, contact_id=contact_id, limit=50
                )
            ]
            if not pending:
                return
            nxt = min(pending, key=lambda j: j["run_at"])
            due = max(nxt["run_at"], now) + endpoint.coalesce
            jobs.enqueue(
                conn,
                kind=JOB_KIND,
                key=f"notion:{name}:{contact_id}:after:{nxt['id']}:{int(due.timestamp())}",
                run_at=due,
                payload={"endpoint": name, "contact_id": contact_id},
                contact_id=contact_id,
            )


# -- wiring -----------------------------------------------------------------------------------


def build_step(pack: Pack, settings: Settings) -> NotionMirrorStep | None:
    endpoints = load_notion_endpoints(pack, settings)
    return NotionMirrorStep({n: e for n, (e, _) in endpoints.items()}) if endpoints else None


def register(registry: Any, db: Database, clock: Clock, pack: Pack, settings: Settings) -> None:
    """Register ``notion_sync`` on a ``HandlerRegistry`` when a Notion endpoint is declared."""
    endpoints = load_notion_endpoints(pack, settings)
    if not endpoints:
        return
    mirror = NotionMirror(db, clock, endpoints, new_client(settings.http_timeout_seconds))
    registry.register(
        JOB_KIND, mirror.sync, max_attempts=NOTION_RETRY.max_attempts, retry=NOTION_RETRY
    )
