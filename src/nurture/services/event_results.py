"""What processing one event did, read back from the timeline and the jobs it scheduled.

The rules step notes every rule that fired (``rule.fired`` with its actions) on the event's
timeline, and every delayed or external action is a job linked to the contact whose payload
names the event. This is the answer a caller of ``POST /api/v1/events?wait=true`` acts on (a
Power Automate flow running the CRM prototype's actions).
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


def event_outcome(conn: Connection, event_id: int) -> dict[str, Any] | None:
    """The decisions and scheduled actions of one event; ``None`` when there is no such event."""
    event = event_store.get(conn, event_id)
    if event is None:
        return None
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
    if event["contact_id"] is not None:
        jobs = job_store.search(conn, contact_id=event["contact_id"], limit=JOB_SCAN_LIMIT)
        mine = [j for j in jobs if (j["payload"] or {}).get("event_id") == event_id]
        out["scheduled"] = [_scheduled(j) for j in sorted(mine, key=lambda j: j["id"])]
    return out
