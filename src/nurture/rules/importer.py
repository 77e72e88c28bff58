"""``nurture rules import``: rules from JSON, ours (``rules export --json``) or the prototype's.

The prototype's export (``exports/automation_rules.json``: ``rule_id``, ``trigger``,
``conditions``, ``actions`` of ``{action_type, config, delay_minutes}``) is translated with the
vocabulary mapping of SPEC §3. Its conditions are turned into CEL that means what they said;
a condition key it silently ignored is refused here rather than dropped.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import ValidationError

from nurture.errors import ConfigError
from nurture.rules.models import RuleSpec

TRIGGERS = {
    "email_opened": "email.opened",
    "email_clicked": "email.clicked",
    "email_bounce": "email.bounced",
    "page_visit": "page.viewed",
    "purchase": "purchase.completed",
    "form_submit": "form.submitted",
    "unsubscribe": "email.unsubscribed",
    "lead_score_high": "score.crossed",
}


def _error(index: int, exc: ValidationError) -> ConfigError:
    parts = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"])
        parts.append(
            f"rules[{index}].{loc}: {err['msg']}" if loc else f"rules[{index}]: {err['msg']}"
        )
    return ConfigError("; ".join(parts))


def _condition(index: int, trigger: str, conditions: dict[str, Any]) -> str | None:
    parts = []
    for key in conditions:
        if key not in ("segment", "minimum_amount", "score_threshold"):
            raise ConfigError(f"rules[{index}]: unknown condition {key!r}")
    if "segment" in conditions:
        values = conditions["segment"]
        values = [values] if isinstance(values, str) else list(values)
        parts.append(
            f"has(contact.segments.value) && contact.segments.value in {json.dumps(values)}"
        )
    if "minimum_amount" in conditions:
        amount = float(conditions["minimum_amount"])
        parts.append(f"has(event.data.amount) && double(event.data.amount) > {amount!r}")
    if "score_threshold" in conditions:
        threshold = int(conditions["score_threshold"])
        if trigger == "lead_score_high":
            parts.append(f'event.data.direction == "up" && event.data.threshold == {threshold}')
        else:
            parts.append(f"contact.score >= {threshold}")
    return " && ".join(parts) or None


def _action(index: int, item: dict[str, Any]) -> dict[str, Any]:
    kind = item.get("action_type")
    config = dict(item.get("config") or {})
    delay = int(item.get("delay_minutes") or 0)
    out: dict[str, Any]
    if kind == "update_score":
        out = {"score": int(config.get("score_delta", 0))}
        if config.get("reason"):
            out["reason"] = config["reason"]
    elif kind == "add_tag":
        out = {"tag": config.get("tag")}
    elif kind == "send_email":
        out = {"send_email": config.get("template")}
    elif kind == "create_task":
        out = {"task": config.get("task") or config.get("title") or "Task"}
    elif kind == "schedule_call":
        out = {"task": config.get("task") or "Call", "kind": "call"}
        if config.get("priority"):
            out["priority"] = config["priority"]
    elif kind == "pause_campaign":
        out = {"exit": config.get("campaign") or config.get("sequence") or "all"}
    elif kind == "send_sms":
        out = {"send_sms": config.get("template")}
        if config.get("message") or config.get("text"):
            out["text"] = config.get("message") or config.get("text")
    elif kind == "trigger_webhook":
        out = {"webhook": config.get("endpoint") or config.get("url")}
    else:
        raise ConfigError(f"rules[{index}]: unknown action_type {kind!r}")
    if delay:
        out["after"] = f"{delay}m"
    return out


def from_prototype(index: int, item: dict[str, Any]) -> dict[str, Any]:
    trigger = item.get("trigger")
    if trigger == "time_based":
        raise ConfigError(f"rules[{index}]: time_based needs a cron: write it as on: schedule")
    if trigger not in TRIGGERS:
        raise ConfigError(f"rules[{index}]: unknown trigger {trigger!r}")
    rule: dict[str, Any] = {
        "id": str(item.get("rule_id")),
        "on": TRIGGERS[trigger],
        "priority": item.get("priority", 50),
        "enabled": item.get("enabled", True),
        "description": item.get("description") or "",
        "do": [_action(index, a) for a in item.get("actions") or []],
    }
    condition = _condition(index, trigger, dict(item.get("conditions") or {}))
    if condition is not None:
        rule["if"] = condition
    return rule


def import_rules(data: Any) -> list[RuleSpec]:
    """Validated rules from exported JSON (a list, or ``{"rules": [...]}``)."""
    if isinstance(data, dict) and isinstance(data.get("rules"), list):
        data = data["rules"]
    if not isinstance(data, list):
        raise ConfigError('rules JSON must be a list of rules (or {"rules": [...]})')
    specs: list[RuleSpec] = []
    seen: set[str] = set()
    for index, item in enumerate(data):
        if not isinstance(item, dict):
            raise ConfigError(f"rules[{index}]: must be an object")
        raw = from_prototype(index, item) if "rule_id" in item else item
        try:
            spec = RuleSpec.model_validate(raw)
        except ValidationError as exc:
            raise _error(index, exc) from None
        if spec.id in seen:
            raise ConfigError(f"rules[{index}].id: rule {spec.id!r} appears twice")
        seen.add(spec.id)
        specs.append(spec)
    return specs
