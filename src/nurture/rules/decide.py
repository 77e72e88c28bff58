"""``decide()``: which rules fire for one event, and what they do. Pure: no I/O, no clock.

Rules run in priority order (higher first, ties in file order). A condition that is false or
fails at run time does not fire; the failure is reported so the caller can put it on the
timeline. ``once`` limits are checked against the history the caller passes in, ``stop`` ends
the evaluation after the rule that carries it fires.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from nurture.rules.book import Action, Automation, Rule
from nurture.rules.expr import ExprError, Scope
from nurture.rules.models import EXTERNAL_ACTIONS, ActionSpec

FIRED = "fired"
CONDITION_FALSE = "condition-false"
CONDITION_ERROR = "condition-error"
ONCE_LIMIT = "once-limit"
STOPPED = "stopped"
NOT_TRIGGERED = "not-triggered"
DISABLED = "disabled"


@dataclass(frozen=True, slots=True)
class Decision:
    rule_id: str
    action_index: int
    kind: str
    spec: ActionSpec
    value: Any = None  # the evaluated value of ``set``/``segment``

    @property
    def delay(self) -> timedelta | None:
        return self.spec.after

    @property
    def immediate(self) -> bool:
        """Applied in the event's transaction; everything else (external effects, and any
        action with ``after:``) becomes a job."""
        return self.kind not in EXTERNAL_ACTIONS and self.spec.after is None

    @property
    def deferred(self) -> bool:
        """An immediate kind of action (score, tag ...) delayed with ``after:``."""
        return self.kind not in EXTERNAL_ACTIONS and self.spec.after is not None

    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "rule_id": self.rule_id,
            "action_index": self.action_index,
            "action": self.kind,
            "immediate": self.immediate,
            **self.spec.export(),
        }
        if self.kind in ("set", "segment"):
            out["value"] = self.value
            out.pop("expr", None)
        return out


@dataclass(frozen=True, slots=True)
class Outcome:
    rule_id: str
    status: str
    detail: str = ""


@dataclass(frozen=True, slots=True)
class RuleError:
    rule_id: str
    where: str  # "if" or "do.N.expr"
    message: str


@dataclass
class Evaluation:
    decisions: list[Decision] = field(default_factory=list)
    outcomes: list[Outcome] = field(default_factory=list)
    errors: list[RuleError] = field(default_factory=list)

    @property
    def fired(self) -> list[str]:
        return [o.rule_id for o in self.outcomes if o.status == FIRED]


def variables(
    event: Mapping[str, Any], contact: Mapping[str, Any], now: datetime
) -> dict[str, Any]:
    return {"event": event, "contact": contact, "now": now}


def once_blocked(rule: Rule, history: Mapping[str, datetime], now: datetime) -> bool:
    if rule.spec.once is None:
        return False
    last = history.get(rule.id)
    if last is None:
        return False
    window = rule.once_window
    return window is None or now - last < window


def _actions(rule: Rule, scope: Scope, evaluation: Evaluation) -> list[Decision]:
    out = []
    for action in rule.actions:
        value = _value(rule, action, scope, evaluation)
        if value is _FAILED:
            continue
        out.append(Decision(rule.id, action.index, action.kind, action.spec, value))
    return out


_FAILED = object()


def _value(rule: Rule, action: Action, scope: Scope, evaluation: Evaluation) -> Any:
    if action.kind not in ("set", "segment"):
        return None
    if action.expr is None:
        return action.spec.value
    try:
        return action.expr.evaluate(scope)
    except ExprError as exc:
        evaluation.errors.append(RuleError(rule.id, f"do.{action.index}.expr", str(exc)))
        return _FAILED


def evaluate(
    automation: Automation,
    event: Mapping[str, Any],
    contact: Mapping[str, Any],
    now: datetime,
    history: Mapping[str, datetime] | None = None,
    *,
    explain: bool = False,
) -> Evaluation:
    """Evaluate the rules triggered by ``event["type"]``.

    ``history`` maps rule id to when it last fired for this contact (for ``once``).
    ``explain`` also lists rules that were not triggered or are disabled (dry runs).
    """
    history = history or {}
    evaluation = Evaluation()
    candidates = automation.candidates(str(event.get("type")), event.get("data"))
    scope = Scope(variables(event, contact, now)) if candidates else None
    stopped_by: str | None = None
    for rule in candidates:
        assert scope is not None
        if stopped_by is not None:
            evaluation.outcomes.append(Outcome(rule.id, STOPPED, f"stopped by {stopped_by}"))
            continue
        if rule.condition is not None:
            try:
                passed = rule.condition.test(scope)
            except ExprError as exc:
                evaluation.errors.append(RuleError(rule.id, "if", str(exc)))
                evaluation.outcomes.append(Outcome(rule.id, CONDITION_ERROR, str(exc)))
                continue
            if not passed:
                evaluation.outcomes.append(Outcome(rule.id, CONDITION_FALSE, rule.condition.source))
                continue
        if once_blocked(rule, history, now):
            last = history[rule.id]
            evaluation.outcomes.append(
                Outcome(
                    rule.id, ONCE_LIMIT, f"once: {rule.spec.once}; last fired {last.isoformat()}"
                )
            )
            continue
        evaluation.decisions.extend(_actions(rule, scope, evaluation))
        evaluation.outcomes.append(Outcome(rule.id, FIRED))
        if rule.spec.stop:
            stopped_by = rule.id
    if explain:
        listed = {r.id for r in candidates}
        for rule in automation.ordered_rules:
            if rule.id in listed:
                continue
            if not rule.spec.enabled:
                evaluation.outcomes.append(Outcome(rule.id, DISABLED))
            else:
                on = ", ".join(rule.spec.on)
                evaluation.outcomes.append(Outcome(rule.id, NOT_TRIGGERED, f"on: {on}"))
    return evaluation


def decide(
    automation: Automation,
    event: Mapping[str, Any],
    contact: Mapping[str, Any],
    now: datetime,
    history: Mapping[str, datetime] | None = None,
) -> list[Decision]:
    return evaluate(automation, event, contact, now, history).decisions
