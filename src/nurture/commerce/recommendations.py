"""Recommendations for one contact (API) and the recommendation campaign (CLI).

The campaign respects suppression (only ``subscribed`` contacts with an e-mail) and a
contact-silence window: no recommendation mail to a contact who got a marketing e-mail in the
last ``silence_days`` (default 135). The last marketing send is the latest of the delivery
log (``messages``: non-transactional e-mails sent, or whose sending is in doubt) and the
contact attribute ``last_marketing_at``, which this campaign sets when it queues a mail, so
the window also holds between queueing and sending, and which an import or another sender
may set for mail sent outside nurture.

A dry run only reads (``Database.read``): it cannot enqueue, write or send anything. ``--send``
queues one ``send_email`` job per contact (template ``recommendations``, the items in
``vars.recommendations``), keyed per contact and day, so running it twice sends once.

The co-purchase model (neighbours and best sellers) is built once per pass from every order
line. The API keeps it per process for ``model_ttl_seconds`` (``ModelCache``): building it
means reading every line, while what is personal (the contact's own lines, segment, recent
purchases) is read on each request.
"""

from __future__ import annotations

import threading
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import polars as pl
from sqlalchemy import Connection

from nurture import jobs
from nurture.analytics import recommend as reco
from nurture.commerce.purchases import CommerceConfig
from nurture.database.engine import Database
from nurture.errors import NotFound
from nurture.storage import contacts as contact_store
from nurture.storage import marketing as marketing_store
from nurture.storage import orders as order_store
from nurture.storage import products as product_store
from nurture.storage import timeline as timeline_store

TEMPLATE = "recommendations"
SILENCE_ATTRIBUTE = "last_marketing_at"
UTC_US = pl.Datetime("us", "UTC")


def last_marketing_at(contact: dict[str, Any]) -> datetime | None:
    """The contact attribute ``last_marketing_at`` (ISO 8601 with an offset), if readable."""
    value = (contact.get("attributes") or {}).get(SILENCE_ATTRIBUTE)
    return _instant(value) if isinstance(value, str) else None


def _instant(value: str) -> datetime | None:
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else None


def _instants(values: pl.Series) -> pl.Series:
    """ISO 8601 texts to UTC instants, each distinct text parsed once (a campaign stamps the
    same instant on every contact it mails)."""
    distinct = values.drop_nulls().unique()
    read = [_instant(v) for v in distinct.to_list()]
    return values.replace_strict(
        distinct, pl.Series(read, dtype=UTC_US), default=None, return_dtype=UTC_US
    )


@dataclass(frozen=True)
class Catalogue:
    names: pl.DataFrame  # product_key, name, category (name falls back to the key)
    inactive: list[str]


def _catalogue(conn: Connection) -> Catalogue:
    products = product_store.catalogue(conn)
    names = pl.DataFrame(
        {
            "product_key": list(products),
            "name": [p["name"] for p in products.values()],
            "category": [p["category"] for p in products.values()],
        },
        schema={"product_key": pl.String(), "name": pl.String(), "category": pl.String()},
    )
    inactive = sorted(k for k, p in products.items() if not p["active"])
    return Catalogue(names=names, inactive=inactive)


def _items(frame: pl.DataFrame, catalogue: Catalogue) -> pl.DataFrame:
    """``contact_id, items``: each contact's ranked items as the API and templates show them."""
    item = pl.struct(
        "rank",
        "product_key",
        pl.coalesce("name", "product_key").alias("name"),
        "category",
        "scenario",
        "reason",
        "score",
    )
    return (
        frame.join(catalogue.names, on="product_key", how="left", maintain_order="left")
        .sort("contact_id", "rank")
        .group_by("contact_id", maintain_order=True)
        .agg(item.alias("items"))
    )


@dataclass
class ModelCache:
    """The co-purchase model per process, rebuilt when older than ``ttl`` or when the settings
    or the inactive products change. Thread-safe: one build at a time."""

    entries: dict[tuple[Any, ...], tuple[datetime, reco.Model]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)
    builds: int = 0

    def get(
        self,
        db: Database,
        now: datetime,
        settings: reco.RecommendationSettings,
        inactive: list[str],
    ) -> reco.Model:
        key = (db.url, settings, tuple(inactive))
        ttl = timedelta(seconds=settings.model_ttl_seconds)
        with self.lock:
            found = self.entries.get(key)
            if found is not None and abs(now - found[0]) < ttl:
                return found[1]
            with db.read() as conn:
                lines = order_store.line_frame(conn)
            model = reco.build_model(lines, now, settings, inactive)
            self.entries = {key: (now, model)}
            self.builds += 1
            return model


def for_contact(
    db: Database,
    contact_id: int,
    now: datetime,
    config: CommerceConfig,
    n: int | None = None,
    cache: ModelCache | None = None,
) -> dict[str, Any]:
    """``{contact_id, segment, scenario, items}`` for one contact (no purchase: best sellers).
    Without a cache the model is built from every line for this call."""
    settings = config.recommendations
    with db.read() as conn:
        row = contact_store.get_row(conn, contact_id)
        if row is None:
            raise NotFound(f"no contact {contact_id}")
        own = order_store.line_frame(conn, [contact_id])
        catalogue = _catalogue(conn)
    segment = (row.get("segments") or {}).get("value")
    scenario = reco.scenario_for(segment, row.get("rfm"))
    model = (cache or ModelCache()).get(db, now, settings, catalogue.inactive)
    scenarios = pl.DataFrame(
        {"contact_id": [contact_id], "scenario": [scenario]},
        schema={"contact_id": pl.Int64(), "scenario": pl.String()},
    )
    frame = reco.recommend(
        model, own, scenarios, now, settings, n, catalogue.names.select("product_key", "name")
    )
    found = _items(frame, catalogue).get_column("items").to_list()
    return {
        "contact_id": contact_id,
        "segment": segment,
        "scenario": scenario,
        "items": found[0] if found else [],
    }


@dataclass
class CampaignPlan:
    considered: int = 0
    excluded: Counter[str] = field(default_factory=Counter)
    # {contact_id, email, scenario, items}
    messages: list[dict[str, Any]] = field(default_factory=list)
    queued: int = 0  # jobs newly enqueued (send only)
    sent: bool = False


def plan_campaign(
    db: Database,
    now: datetime,
    config: CommerceConfig,
    *,
    n: int | None = None,
    silence_days: int | None = None,
    limit: int | None = None,
) -> CampaignPlan:
    """Who would get which items. Read-only: this is the whole of a dry run. One vectorised
    pass: eligibility, scenarios and items for every buyer at once."""
    settings = config.recommendations
    silence = timedelta(days=settings.silence_days if silence_days is None else silence_days)
    with db.read() as conn:
        buyers = order_store.buyers(conn)
        sends = marketing_store.last_sends(conn)
        lines = order_store.line_frame(conn)
        catalogue = _catalogue(conn)
    buyers = buyers.join(sends, on="contact_id", how="left", maintain_order="left").with_columns(
        pl.max_horizontal("last_sent_at", _instants(buyers.get_column(SILENCE_ATTRIBUTE))).alias(
            "last_marketing"
        )
    )
    c = pl.col
    exclusion = (
        pl.when(c("email").is_null())
        .then(pl.lit("no e-mail"))
        .when(c("status") != "subscribed")
        .then(pl.format("suppressed ({})", "status"))
        .when(c("last_marketing").is_not_null() & (pl.lit(now) - c("last_marketing") < silence))
        .then(pl.lit("silence window"))
    )
    buyers = buyers.with_columns(exclusion.alias("excluded"))
    plan = CampaignPlan(considered=buyers.height)
    plan.excluded.update(dict(buyers.get_column("excluded").drop_nulls().value_counts().rows()))
    eligible = buyers.filter(c("excluded").is_null())
    if limit is not None:
        eligible = eligible.head(limit)
    eligible = eligible.with_columns(
        reco.scenario_column(c("segment"), c("frequency"), c("recency_days"), c("score")).alias(
            "scenario"
        )
    )
    model = reco.build_model(lines, now, settings, catalogue.inactive)
    frame = reco.recommend(
        model,
        lines,
        eligible.select("contact_id", "scenario"),
        now,
        settings,
        n,
        catalogue.names.select("product_key", "name"),
    )
    planned = eligible.select("contact_id", "email", "scenario").join(
        _items(frame, catalogue), on="contact_id", how="left", maintain_order="left"
    )
    empty = planned.get_column("items").is_null()
    if empty.any():
        plan.excluded["nothing to recommend"] += int(empty.sum())
    plan.messages = planned.filter(~empty).to_dicts()
    return plan


def send_campaign(db: Database, plan: CampaignPlan, now: datetime, batch: int = 1000) -> int:
    """Queue the planned mails (idempotent per contact and day) and start each contact's silence
    window; returns how many jobs were new."""
    day = now.strftime("%Y-%m-%d")
    queued = 0
    for start in range(0, len(plan.messages), batch):
        chunk = plan.messages[start : start + batch]
        specs = [
            jobs.JobSpec(
                kind="send_email",
                key=f"campaign:{TEMPLATE}:{day}:{m['contact_id']}",
                run_at=now,
                payload={
                    "template": TEMPLATE,
                    "contact_id": m["contact_id"],
                    "event_id": None,
                    "rule_id": None,
                    "enrollment_id": None,
                    "step_id": None,
                    "transactional": False,
                    "vars": {"recommendations": m["items"], "scenario": m["scenario"]},
                },
                contact_id=m["contact_id"],
            )
            for m in chunk
        ]
        with db.begin() as conn:
            queued += jobs.enqueue_many(conn, specs, now=now)
            states = contact_store.load_many(conn, ids=[m["contact_id"] for m in chunk])
            for state in states:
                state.attributes[SILENCE_ATTRIBUTE] = now.isoformat()
                state.dirty = True
            contact_store.save_many(conn, states, now)
            timeline_store.append(
                conn,
                [
                    {
                        "contact_id": m["contact_id"],
                        "event_id": None,
                        "at": now,
                        "kind": "campaign.recommendations",
                        "rule_id": None,
                        "detail": {
                            "scenario": m["scenario"],
                            "products": [i["product_key"] for i in m["items"]],
                        },
                    }
                    for m in chunk
                ],
            )
    plan.queued = queued
    plan.sent = True
    return queued
