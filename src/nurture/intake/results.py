"""What processing one event did, read back from the timeline and the jobs it scheduled.

The rules step notes every rule that fired (``rule.fired`` with its actions) on the event's
timeline, and every delayed or external action is a job linked to the contact whose payload
names the event. This is the answer a caller of ``POST /api/v1/events?wait=true`` acts on (a
Power Automate flow running the CRM prototype's actions).

Processing an event may queue derived events (``score.crossed``, ``segment.changed``, ...),
processed after it as events of their own; their decisions are listed under ``derived``, each
with its ``parent_id`` and its own ``status`` (``pending`` until processed).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy import Connection

from nurture.storage import events as event_store
from nurture.storage import jobs as job_store
from nurture.storage import timeline as timeline_store

# The payload field that names what a job does, per job kind (see the jobs contract).
_SUBJECT = {
    "send_email": "template",
    "send_sms": "template",
    "webhook": "endpoint",
    "task": "title",
}
# A contact's recent jobs scanned for this event's; far more than one event schedules.
JOB_SCAN_LIMIT = 500
# A contact's recent events scanned for the ones an event caused (at most a few per level).
DERIVED_SCAN_LIMIT = 200


def _iso(value: Any) -> Any:
    return value.isoformat() if hasattr(value, "isoformat") else value


def _scheduled(job: Mapping[str, Any]) -> dict[str, Any]:
    payload = job["payload"] or {}
    out: dict[str, Any] = {
        "job_id": job["id"],
        "job_key": job["key"],
        "action": job["kind"],
        "rule_id": payload.get("rule_id"),
        "due_at": _iso(job["run_at"]),
        "status": job["status"],
    }
    subject = _SUBJECT.get(job["kind"])
    if subject is not None and payload.get(subject) is not None:
        out[subject] = payload[subject]
    if job["kind"] == "task":
        out["task_kind"] = payload.get("kind")
        out["priority"] = payload.get("priority")
    return out


def descendants(conn: Connection, event_id: int, contact_id: int | None) -> list[dict[str, Any]]:
    """The derived events ``event_id`` caused, directly or through other derived events, oldest
    first (event summaries: ``id``, ``type``, ``status``, ``attempts``, ``parent_id``, ...)."""
    if contact_id is None:
        return []
    rows = event_store.search(conn, contact_id=contact_id, limit=DERIVED_SCAN_LIMIT)
    family = {event_id}
    out = []
    for row in sorted(rows, key=lambda r: r["id"]):
        if row["id"] > event_id and row["parent_id"] in family:
            family.add(row["id"])
            out.append(row)
    return out


def event_outcome(
    conn: Connection, event_id: int, *, with_derived: bool = True
) -> dict[str, Any] | None:
    """The decisions and scheduled actions of one event, and of the derived events it caused
    (``derived``); ``None`` when there is no such event."""
    event = event_store.get(conn, event_id)
    if event is None:
        return None
    contact_id = event["contact_id"]
    jobs = (
        job_store.search(conn, contact_id=contact_id, limit=JOB_SCAN_LIMIT)
        if contact_id is not None
        else []
    )
    out = _outcome(conn, event_id, event, jobs)
    if with_derived:
        out["derived"] = []
        for row in descendants(conn, event_id, contact_id):
            found = _outcome(conn, row["id"], row, jobs)
            found["parent_id"] = row["parent_id"]
            out["derived"].append(found)
    return out


def _outcome(
    conn: Connection,
    event_id: int,
    event: Mapping[str, Any],
    jobs: list[dict[str, Any]],
) -> dict[str, Any]:
    out: dict[str, Any] = {
        "event_id": event_id,
        "type": event["type"],
        "status": event["status"],
        "contact_id": event["contact_id"],
        "decisions": [],
        "scheduled": [],
        "score": None,
        "segments": [],
        "errors": [],
    }
    if event["status"] == "failed":
        out["error"] = event["error"]
    if event["status"] != "processed":
        return out
    for note in timeline_store.for_event(conn, event_id):
        kind, detail = note["kind"], note["detail"] or {}
        if kind == "rule.fired":
            actions = []
            for action in detail.get("actions", []):
                item = {k: v for k, v in action.items() if k not in ("rule_id", "job_new")}
                if "run_at" in item:
                    item["due_at"] = item.pop("run_at")
                actions.append(item)
            out["decisions"].append({"rule_id": note["rule_id"], "actions": actions})
        elif kind == "score.changed":
            out["score"] = {"from": detail.get("from"), "to": detail.get("to")}
        elif kind == "segment.changed":
            out["segments"].append(detail)
        elif kind in ("rule.error", "segment.error"):
            out["errors"].append({"kind": kind, "rule_id": note["rule_id"], **detail})
    mine = [j for j in jobs if (j["payload"] or {}).get("event_id") == event_id]
    out["scheduled"] = [_scheduled(j) for j in sorted(mine, key=lambda j: j["id"])]
    return out
