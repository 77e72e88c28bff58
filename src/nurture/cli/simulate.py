"""``nurture simulate``: run events through the real rules and sequences in virtual time.

An in-memory SQLite database, a ``VirtualClock`` and the real pipeline (``build_processor``,
``build_registry``) with every channel recording (dry run): nothing leaves the process. The clock
jumps to each input event and each due job in turn, and the timeline says what fired when and
what was skipped and why.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import typer
from sqlalchemy import select

from nurture.bootstrap import build_container, build_processor, build_registry
from nurture.cli.common import fail, settings
from nurture.clock import VirtualClock
from nurture.config import Settings
from nurture.core.durations import format_duration, parse_duration
from nurture.core.events import ContactRef, InboundEvent, content_hash, normalise_email
from nurture.database import migrate
from nurture.database.engine import Database
from nurture.errors import NurtureError
from nurture.intake.ingest import build_rows
from nurture.jobs import JobWorker
from nurture.schema.tables import enrollment_steps, enrollments, messages, timeline
from nurture.sequences.plan import parse_offset
from nurture.storage import events as event_store
from nurture.storage import jobs as job_store

MAX_ROUNDS = 100_000


@dataclass(frozen=True)
class SimEvent:
    at: datetime
    event: InboundEvent


def _time(value: Any, start: datetime | None, where: str) -> datetime:
    text = str(value).strip()
    if text[:1] in "+-" or (text[:1].isdigit() and not _looks_iso(text)):
        if start is None:
            raise NurtureError(f"{where}: a relative time needs --start or an absolute first event")
        return start + parse_offset(text)
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise NurtureError(
            f"{where}: {text!r} is neither ISO 8601 nor an offset like +26h"
        ) from None
    if parsed.tzinfo is None:
        raise NurtureError(f"{where}: {text!r} has no UTC offset")
    return parsed.astimezone(UTC)


def _looks_iso(text: str) -> bool:
    return len(text) >= 10 and text[4] == "-" and text[7] == "-"


def read_json(path: Path) -> Any:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise NurtureError(f"{path}: {exc.strerror}") from None
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        pass
    try:  # JSON Lines
        return [orjson.loads(line) for line in raw.splitlines() if line.strip()]
    except orjson.JSONDecodeError as exc:
        raise NurtureError(f"{path}: neither JSON nor JSON Lines: {exc}") from None


def contact_ref(data: Any, where: str) -> ContactRef:
    if not isinstance(data, dict):
        raise NurtureError(f"{where}: contact must be an object with an email")
    email = normalise_email(str(data.get("email") or ""))
    if email is None:
        raise NurtureError(f"{where}: contact needs a valid email")
    traits = {k: v for k, v in data.items() if k not in ("email", "identities")}
    return ContactRef(email=email, identities=dict(data.get("identities") or {}), traits=traits)


def parse_events(
    items: Any, default_contact: dict[str, Any] | None, start: datetime | None
) -> tuple[list[SimEvent], datetime]:
    """The events file: a list of ``{at, type, data, contact?}``; ``at`` is ISO 8601 or an
    offset from the start (``+26h``). Returns the events in time order and the start."""
    if not isinstance(items, list) or not items:
        raise NurtureError("the events file must hold a non-empty list of events")
    if start is None:
        first = items[0].get("at") if isinstance(items[0], dict) else None
        if first is not None and _looks_iso(str(first)):
            start = _time(first, None, "events[0].at")
        else:
            start = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    out = []
    for i, item in enumerate(items):
        where = f"events[{i}]"
        if not isinstance(item, dict) or not isinstance(item.get("type"), str):
            raise NurtureError(f"{where}: needs a type")
        at = _time(item.get("at", "+0h"), start, f"{where}.at")
        contact = item.get("contact", default_contact)
        ref = contact_ref(contact, f"{where}.contact") if contact is not None else None
        data = item.get("data") or {}
        if not isinstance(data, dict):
            raise NurtureError(f"{where}.data: must be an object")
        event = InboundEvent(
            source="simulate",
            type=item["type"],
            dedupe_key=content_hash("simulate", i, item["type"]),
            contact=ref,
            data=data,
            occurred_at=at,
        )
        out.append(SimEvent(at, event))
    out.sort(key=lambda e: e.at)
    return out, start


class Timeline:
    """Turns timeline rows and messages into lines."""

    def __init__(self, start: datetime, echo: Callable[[str], None]) -> None:
        self.start = start
        self.echo = echo
        self.last_note = 0
        self.last_message = 0

    def stamp(self, at: datetime) -> str:
        delta = at - self.start
        rel = ("+" + format_duration(delta)) if delta >= timedelta(0) else "before start"
        return f"{at:%a %Y-%m-%d %H:%M} ({rel})"

    def flush(self, db: Database) -> None:
        with db.read() as conn:
            notes = conn.execute(
                select(timeline).where(timeline.c.id > self.last_note).order_by(timeline.c.id)
            ).mappings()
            rows = [dict(r) for r in notes]
            sent = [
                dict(r)
                for r in conn.execute(
                    select(messages)
                    .where(messages.c.id > self.last_message)
                    .order_by(messages.c.id)
                ).mappings()
            ]
        # Same instant: what happened, then what was sent, then what completed because of it.
        lines: list[tuple[datetime, int, int, str]] = []
        for row in rows:
            self.last_note = row["id"]
            line = self.describe(row)
            if line:
                derived = (row["detail"] or {}).get("source") == "derived"
                rank = 2 if row["kind"] == "sequence.completed" or derived else 0
                lines.append((row["at"], rank, len(lines), line))
        for msg in sent:
            self.last_message = msg["id"]
            origin = (
                f"sequence step {msg['step_id']} (enrollment {msg['enrollment_id']})"
                if msg["enrollment_id"] is not None
                else f"rule {msg['rule_id']}"
            )
            at = msg["sent_at"] or msg["updated_at"]
            what = "SENT" if msg["status"] == "sent" else msg["status"].upper()
            reason = f" ({msg['error']})" if msg["error"] and msg["status"] != "sent" else ""
            text = (
                f"{self.stamp(at)}  {what} e-mail {msg['template']} to {msg['to_address']}: "
                f"“{msg['subject'] or ''}” [{origin}]{reason}"
            )
            lines.append((at, 1, len(lines), text))
        for _, _, _, text in sorted(lines):
            self.echo(text)

    def describe(self, row: dict[str, Any]) -> str | None:
        kind, d, at = row["kind"], row["detail"] or {}, row["at"]
        if kind == "event":
            return f"{self.stamp(at)}  event {d.get('type')} ({d.get('source')})"
        if kind == "rule.fired":
            actions = ", ".join(str(a.get("action")) for a in d.get("actions", []))
            return f"    rule {row['rule_id']} fired: {actions}"
        if kind == "rule.error":
            return f"    rule {row['rule_id']} error: {d.get('error')}"
        if kind == "segment.changed":
            return f"    segment {d.get('segmentation')}: {d.get('from')} -> {d.get('to')}"
        if kind == "sequence.enrolled":
            lines = [
                f"    enrolled in {d['sequence']} (enrollment {d['enrollment_id']}, "
                f"key {d['key']}, anchor {d['anchor_at']})"
            ]
            lines += [self._step(s) for s in d.get("steps", [])]
            return "\n".join(lines)
        if kind == "sequence.rescheduled":
            lines = [
                f"    {d['sequence']} enrollment {d['enrollment_id']} rescheduled "
                f"({d['from_key']} -> {d['key']}), new anchor {d['anchor_at']}"
            ]
            lines += [self._step(s) for s in d.get("steps", [])]
            return "\n".join(lines)
        if kind == "sequence.not_enrolled":
            return (
                f"    not enrolled in {d.get('sequence')} (key {d.get('key')}): {d.get('reason')}"
            )
        if kind in ("sequence.exited", "sequence.cancelled"):
            return (
                f"    {d['sequence']} enrollment {d['enrollment_id']} {d['status']}: "
                f"{d['reason']}; {d['cancelled_steps']} pending step(s) cancelled"
            )
        if kind == "sequence.completed":
            return f"{self.stamp(at)}  {d['sequence']} enrollment {d['enrollment_id']} completed"
        if kind == "sequence.step":
            if d.get("status") == "sent":
                return None  # the message line says it, with the subject
            return f"{self.stamp(at)}  {d['sequence']}/{d['step']} {d['status']}: {d.get('reason')}"
        if kind in ("sequence.tombstone", "sequence.error"):
            return (
                f"    {kind.split('.')[1]} {d.get('sequence')}: {d.get('reason') or d.get('error')}"
            )
        return None

    def _step(self, s: dict[str, Any]) -> str:
        due = datetime.fromisoformat(s["due_at"])
        if "skipped" in s:
            return f"      {s['step']:<12} SKIPPED ({s['skipped']})"
        return f"      {s['step']:<12} due {self.stamp(due)}"


async def run(
    base: Settings,
    events: list[SimEvent],
    start: datetime,
    until: timedelta,
    echo: Callable[[str], None],
) -> dict[str, Any]:
    """Play ``events`` and every job they cause up to ``start + until``; return a summary."""
    sim = base.model_copy(
        update={
            "database_url": "sqlite://",
            "dry_run": True,
            "email_provider": "console",
            "time_scale": 1.0,
            "partitions": 1,
        }
    )
    clock = VirtualClock(start)
    container = build_container(sim, clock=clock)
    try:
        migrate.upgrade(container.db)
        processor = build_processor(container)
        registry = build_registry(container)
        worker = JobWorker(container, registry, worker_id="simulate", rng=None)
        out = Timeline(start, echo)
        end = start + until
        pending = list(events)
        for _ in range(MAX_ROUNDS):
            with container.db.read() as conn:
                next_job = job_store.next_run_at(conn, registry.kinds)
            candidates = [t for t in (pending[0].at if pending else None, next_job) if t]
            if not candidates:
                break
            at = min(candidates)
            if at > end:
                break
            if at > clock.now():
                clock.set(at)
            due = [e for e in pending if e.at <= clock.now()]
            pending = pending[len(due) :]
            if due:
                rows = build_rows([e.event for e in due], None, None, clock.now(), sim.partitions)
                with container.db.begin() as conn:
                    event_store.insert_new(conn, rows)
            await asyncio.to_thread(processor.drain)
            await worker.drain()
            await asyncio.to_thread(processor.drain)
            out.flush(container.db)
        return summarise(container.db)
    finally:
        container.close()


def summarise(db: Database) -> dict[str, Any]:
    with db.read() as conn:
        rows = [
            dict(r) for r in conn.execute(select(enrollments).order_by(enrollments.c.id)).mappings()
        ]
        steps = [dict(r) for r in conn.execute(select(enrollment_steps)).mappings()]
        sent = conn.execute(select(messages.c.id).where(messages.c.status == "sent")).all()
    return {
        "enrollments": [
            {
                "id": r["id"],
                "sequence": r["sequence_id"],
                "status": r["status"],
                "reason": r["end_reason"],
                "steps": {
                    s["step_id"]: s["status"] for s in steps if s["enrollment_id"] == r["id"]
                },
            }
            for r in rows
        ],
        "sent": len(sent),
    }


def simulate(
    events: Path = typer.Option(..., "--events", help="JSON (or JSON Lines) list of events"),
    contact: Path | None = typer.Option(
        None, "--contact", help="JSON contact used by events that name none"
    ),
    until: str = typer.Option("30d", "--until", help="How far past the start to run"),
    start: str | None = typer.Option(
        None, "--start", help="Start time (ISO 8601); default: the first event's, else now"
    ),
) -> None:
    """Run events through the rules and sequences in virtual time and print the timeline.

    Sends nothing: an in-memory database and recording channels.
    """
    try:
        horizon = parse_duration(until)
        default_contact = read_json(contact) if contact is not None else None
        begin = _time(start, None, "--start") if start is not None else None
        parsed, first = parse_events(read_json(events), default_contact, begin)
        summary = asyncio.run(run(settings(), parsed, first, horizon, typer.echo))
    except (NurtureError, ValueError) as exc:
        fail(str(exc))
    typer.echo("")
    for e in summary["enrollments"]:
        steps = ", ".join(f"{k} {v}" for k, v in e["steps"].items())
        reason = f" ({e['reason']})" if e["reason"] else ""
        typer.echo(f"enrollment {e['id']} {e['sequence']}: {e['status']}{reason}; {steps}")
    typer.echo(f"{summary['sent']} e-mail(s) would have been sent (dry run: none was)")


def register(app: typer.Typer) -> None:
    app.command("simulate")(simulate)
