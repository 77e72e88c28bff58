"""Purchases: ``purchase.completed`` events become orders, and contacts carry their RFM figures.

The RFM document on a contact (``contacts.rfm``) is
``{recency_days, frequency, monetary, r, f, m, score, last_order_at}``; the ``value``
segmentation and the lead score read it. It is written in two ways:

* incrementally, by ``PurchaseStep`` inside the purchase event's transaction, for that contact
  only, scored against the baseline of the last full pass (so other contacts need not be
  re-ranked on every purchase);
* in full, by ``recompute_all`` (``nurture rfm`` and the nightly ``rfm_recompute`` job), which
  also stores a new baseline.
"""

from __future__ import annotations

import logging
import math
import re
import time
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict
from sqlalchemy import Connection

from nurture import jobs
from nurture.analytics import rfm
from nurture.analytics.recommend import RecommendationSettings
from nurture.analytics.rfm import RfmBands
from nurture.contacts import refresh as contact_refresh
from nurture.core.contacts import ContactState
from nurture.database.engine import Database
from nurture.intake.context import ProcessingContext
from nurture.pack import Pack, load_pack
from nurture.storage import orders as order_store
from nurture.storage import products as product_store
from nurture.storage import rfm as rfm_store

log = logging.getLogger("nurture.commerce")

# Below SMALL_BASE buyers a purchase rebuilds the baseline (a young shop's distribution moves
# fast); above it the nightly full pass keeps it fresh. A rebuild reads every order, so it is
# done on every purchase only while the base is tiny (each buyer shifts the quartiles), and then
# at most once per BASELINE_MAX_AGE: rebuilt on every purchase, a backfill of n purchases cost
# O(n^2) (14 ms of CPU a purchase at 2,400 buyers, bench/ingest.py --sources stripe).
SMALL_BASE = 10_000
TINY_BASE = 200
BASELINE_MAX_AGE = timedelta(minutes=1)


class _ScoringSection(BaseModel):
    """Only our sub-key of the ``scoring:`` section; the lead score owns the rest."""

    model_config = ConfigDict(extra="ignore")

    rfm: RfmBands | None = None


@dataclass(frozen=True)
class CommerceConfig:
    bands: RfmBands | None = None
    recommendations: RecommendationSettings = field(default_factory=RecommendationSettings)


def load_config(pack: Pack) -> CommerceConfig:
    """``scoring.rfm`` (fixed bands; absent = rank-based quartiles) and ``recommendations``."""
    bands = None
    for located in pack.section("scoring"):
        if isinstance(located.value, dict):
            section = pack.validate_item(located, None, _ScoringSection, located.value)
            bands = section.rfm or bands
    settings = RecommendationSettings()
    for located in pack.section("recommendations"):
        settings = pack.validate_item(located, None, RecommendationSettings, located.value or {})
    return CommerceConfig(bands=bands, recommendations=settings)


# -- parsing ----------------------------------------------------------------------------------

_KEY_SEPARATORS = re.compile(r"['\-./\\()*+,]")
_KEY_OTHER = re.compile(r"[^A-Z0-9 ]")


def product_key_from_label(label: str) -> str:
    """The prototype's key: upper case, accents stripped, punctuation to spaces, spaces collapsed
    ("Crémant d'Alsace Extra-Brut" -> ``CREMANT D ALSACE EXTRA BRUT``)."""
    text = unicodedata.normalize("NFKD", label).encode("ascii", "ignore").decode().upper()
    text = _KEY_OTHER.sub("", _KEY_SEPARATORS.sub(" ", text))
    return " ".join(text.split())


def _number(value: Any) -> float | None:
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, str):
        try:
            out = float(value.strip())
        except ValueError:
            return None
        return out if math.isfinite(out) else None
    return None


@dataclass
class ParsedPurchase:
    order: dict[str, Any]
    lines: list[dict[str, Any]]
    names: dict[str, str | None]


def parse_purchase(
    data: dict[str, Any], *, fallback_key: str, contact_id: int, at: datetime, now: datetime
) -> tuple[ParsedPurchase | None, list[str]]:
    """A ``purchase.completed`` payload as an order row and line rows, or the problems found.

    ``amount`` (major units) is the order's net amount unless ``net_amount`` is given;
    without either it is the sum of the items.
    """
    problems: list[str] = []
    lines: list[dict[str, Any]] = []
    names: dict[str, str | None] = {}
    items = data.get("items") or []
    if not isinstance(items, list):
        problems.append("items: must be a list")
        items = []
    for index, item in enumerate(items):
        if not isinstance(item, dict):
            problems.append(f"items.{index}: must be an object")
            continue
        name = item.get("name") if isinstance(item.get("name"), str) else None
        key = item.get("product_key")
        key = str(key).strip() if key not in (None, "") else None
        if key is None and name:
            key = product_key_from_label(name) or None
        if key is None:
            problems.append(f"items.{index}: needs product_key or name")
            continue
        quantity = _number(item.get("quantity", 1))
        if quantity is None or quantity <= 0:
            problems.append(f"items.{index}.quantity: must be a positive number")
            continue
        unit_price = _number(item.get("unit_price"))
        line_net = round(quantity * unit_price, 2) if unit_price is not None else 0.0
        lines.append(
            {
                "line_key": str(index),
                "product_key": key[:200],
                "label": name[:400] if name else None,
                "quantity": quantity,
                "unit_price": unit_price,
                "net_amount": line_net,
                "gross_amount": None,
            }
        )
        names[key[:200]] = name
    net = _number(data.get("net_amount"))
    if net is None:
        net = _number(data.get("amount"))
    if net is None and data.get("amount") is not None:
        problems.append("amount: must be a number (major units)")
    if net is None and lines and not problems:
        net = round(sum(line["net_amount"] for line in lines), 2)
    if net is None and not problems:
        problems.append("amount: missing (and no priced items)")
    gross = _number(data.get("gross_amount"))
    if gross is None:
        gross = _number(data.get("amount"))
    currency = data.get("currency")
    currency = str(currency).strip().upper()[:3] if currency else None
    order_id = data.get("order_id")
    order_key = str(order_id).strip()[:200] if order_id not in (None, "") else fallback_key
    if problems:
        return None, problems
    assert net is not None
    order = {
        "order_key": order_key,
        "contact_id": contact_id,
        "ordered_at": at,
        "net_amount": round(net, 2),
        "gross_amount": round(gross, 2) if gross is not None else None,
        "currency": currency,
        "source": "event",
        "created_at": now,
    }
    return ParsedPurchase(order, lines, names), []


# -- RFM --------------------------------------------------------------------------------------


def baseline_is_stale(baseline: dict[str, Any], now: datetime) -> bool:
    """Whether a purchase should rebuild the stored baseline first (see ``SMALL_BASE``)."""
    contacts = int(baseline.get("contacts", 0))
    if contacts >= SMALL_BASE:
        return False
    if contacts < TINY_BASE:
        return True
    computed_at = baseline.get("computed_at")
    return not isinstance(computed_at, datetime) or now - computed_at >= BASELINE_MAX_AGE


def contact_rfm(
    conn: Connection, contact_id: int, now: datetime, config: CommerceConfig
) -> dict[str, Any] | None:
    """The RFM document of one contact, scored against the stored baseline."""
    summary = rfm.summarize_one(contact_id, order_store.contact_orders(conn, contact_id), now)
    if summary is None:
        return None
    baseline = rfm_store.load_baseline(conn)
    if baseline is None or baseline_is_stale(baseline, now):
        baseline = rfm.baseline(rfm.summarize(order_store.order_frame(conn), now))
        rfm_store.save_baseline(conn, baseline, now)
    scores = rfm.score_one(summary, baseline, config.bands)
    return rfm.document({**summary, **scores})


@dataclass
class RecomputeResult:
    contacts: int
    orders: int
    cleared: int
    read_seconds: float
    compute_seconds: float
    write_seconds: float


def recompute_all(db: Database, now: datetime, config: CommerceConfig) -> RecomputeResult:
    """The full pass: every buyer's figures and scores, one read, one vectorised compute, one
    bulk write, one transaction."""
    started = time.perf_counter()
    with db.begin() as conn:
        frame = order_store.order_frame(conn)
        read_done = time.perf_counter()
        summary = rfm.summarize(frame, now)
        scored = rfm.score(summary, config.bands)
        docs = rfm.records(scored)
        distribution = rfm.baseline(summary)
        compute_done = time.perf_counter()
        rfm_store.write_documents(conn, list(docs.iter_rows()))
        cleared = rfm_store.clear_without_orders(conn)
        # Segments and lead scores read these figures: the worker brings them up to date.
        contact_refresh.request(conn, now, "rfm")
        rfm_store.save_baseline(conn, distribution, now)
    finished = time.perf_counter()
    log.info(
        "rfm recomputed",
        extra={"action": "rfm.recomputed", "contacts": summary.height, "orders": frame.height},
    )
    return RecomputeResult(
        contacts=summary.height,
        orders=frame.height,
        cleared=cleared,
        read_seconds=read_done - started,
        compute_seconds=compute_done - read_done,
        write_seconds=finished - compute_done,
    )


# -- the processing step ----------------------------------------------------------------------


_NIGHTLY_DUE = "commerce.nightly_due"


class PurchaseStep:
    """``purchase.completed`` -> an order (once per order id) and the contact's RFM figures.

    Runs before the rules step so segments and the lead score see the new figures in the same
    event. A payload that cannot be read is noted on the timeline, not retried: retrying cannot
    fix it.
    """

    name = "commerce"

    def __init__(self, config: CommerceConfig) -> None:
        self.config = config

    def apply(self, ctx: ProcessingContext) -> None:
        if ctx.event.type != "purchase.completed" or ctx.contact is None:
            return
        contact = ctx.contact
        parsed, problems = parse_purchase(
            ctx.event.data,
            fallback_key=f"event:{ctx.event.id}",
            contact_id=contact.id,
            at=ctx.event.occurred_at,
            now=ctx.now,
        )
        if parsed is None:
            ctx.note("purchase.invalid", {"problems": problems})
            return
        if not order_store.record(ctx.conn, parsed.order, parsed.lines):
            ctx.note("purchase.duplicate", {"order_id": parsed.order["order_key"]})
            return
        product_store.remember(ctx.conn, parsed.names, ctx.now)
        self.refresh(ctx.conn, contact, ctx.now)
        ctx.results[_NIGHTLY_DUE] = True
        ctx.note(
            "purchase.recorded",
            {
                "order_id": parsed.order["order_key"],
                "amount": parsed.order["net_amount"],
                "currency": parsed.order["currency"],
                "lines": len(parsed.lines),
                "rfm": contact.rfm,
            },
        )

    def finish_batch(
        self, conn: Connection, contexts: Sequence[ProcessingContext], now: datetime
    ) -> None:
        """One look for the nightly pass's job per batch that recorded an order, not per order."""
        if any(ctx.results.get(_NIGHTLY_DUE) for ctx in contexts):
            schedule_nightly(conn, now)

    def refresh(self, conn: Connection, contact: ContactState, now: datetime) -> None:
        contact.rfm = contact_rfm(conn, contact.id, now, self.config)
        contact.dirty = True


def build_purchase_step(automation_dir: Path | None) -> PurchaseStep:
    return PurchaseStep(load_config(load_pack(automation_dir)))


# -- the nightly full pass --------------------------------------------------------------------

RFM_JOB = "rfm_recompute"
NIGHTLY_HOUR_UTC = 3


def next_nightly(now: datetime) -> datetime:
    """The next 03:00 UTC strictly after ``now``."""
    run = now.astimezone(UTC).replace(hour=NIGHTLY_HOUR_UTC, minute=0, second=0, microsecond=0)
    return run if run > now else run + timedelta(days=1)


def schedule_nightly(conn: Connection, now: datetime) -> None:
    """Make sure the next nightly pass is scheduled; one job per night whoever asks (the key is
    the date), so purchases, ``nurture rfm`` and the job itself can all call this."""
    run_at = next_nightly(now)
    jobs.enqueue(
        conn, kind=RFM_JOB, key=f"{RFM_JOB}:{run_at:%Y-%m-%d}", run_at=run_at, payload={}, now=now
    )


def _nightly(db: Database, automation_dir: Path | None, ctx: jobs.JobContext) -> None:
    config = load_config(load_pack(automation_dir))
    result = recompute_all(db, ctx.now, config)
    ctx.heartbeat()
    with db.begin() as conn:
        schedule_nightly(conn, ctx.now)
    log.info("nightly rfm pass", extra={"action": "rfm.nightly", "contacts": result.contacts})


def register_jobs(
    registry: jobs.HandlerRegistry, db: Database, automation_dir: Path | None
) -> None:
    registry.register(RFM_JOB, partial(_nightly, db, automation_dir), max_attempts=3)
