"""The compiled automation: rules indexed by trigger, segmentations and scoring, from a ``Pack``.

Everything that can be wrong with the configuration is found here, at load: schema errors,
duplicate ids and CEL that does not compile, each named ``file:line: field: message``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from nurture.core.scoring import ScoringSpec
from nurture.errors import ConfigError
from nurture.pack import Located, Pack, load_pack
from nurture.rules.expr import Expr, ExprSyntaxError
from nurture.rules.models import ActionSpec, RuleSpec, SegmentationSpec

SCHEDULE = "schedule"


@dataclass(frozen=True, slots=True)
class Action:
    index: int
    spec: ActionSpec
    expr: Expr | None = None  # ``set``/``segment`` with ``expr:``
    kind: str = ""  # ``spec.action``, looked up once here rather than per event

    def __post_init__(self) -> None:
        if not self.kind:
            object.__setattr__(self, "kind", self.spec.action)


@dataclass(frozen=True, slots=True)
class Rule:
    spec: RuleSpec
    order: int  # position across all files, for stable ties
    condition: Expr | None
    actions: tuple[Action, ...]
    where: str  # file:line, for messages

    @property
    def id(self) -> str:
        return self.spec.id

    @property
    def once_window(self) -> timedelta | None:
        return self.spec.once_window


@dataclass(frozen=True, slots=True)
class SegmentValue:
    value: str
    condition: Expr | None


@dataclass(frozen=True, slots=True)
class Segmentation:
    id: str
    condition: Expr | None
    values: tuple[SegmentValue, ...]
    spec: SegmentationSpec


@dataclass
class Automation:
    """What the rules step, the dry run and ``check`` work from."""

    rules: list[Rule] = field(default_factory=list)
    segmentations: list[Segmentation] = field(default_factory=list)
    scoring: ScoringSpec = field(default_factory=ScoringSpec)
    root: Path | None = None
    by_trigger: dict[str, list[Rule]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.reindex()

    def reindex(self) -> None:
        # Priority order (higher first), ties in file order; computed once, not per event.
        ordered = sorted(self.rules, key=lambda r: (-r.spec.priority, r.order))
        self.by_trigger = {}
        for rule in ordered:
            if not rule.spec.enabled:
                continue
            for trigger in rule.spec.on:
                self.by_trigger.setdefault(trigger, []).append(rule)

    def candidates(self, event_type: str, data: Mapping[str, Any] | None = None) -> list[Rule]:
        rules = self.by_trigger.get(event_type, [])
        if event_type == SCHEDULE:
            # A schedule tick names the one rule it is for.
            wanted = (data or {}).get("rule_id")
            return [r for r in rules if r.id == wanted]
        return rules

    @property
    def ordered_rules(self) -> list[Rule]:
        return sorted(self.rules, key=lambda r: (-r.spec.priority, r.order))

    @property
    def scheduled(self) -> list[Rule]:
        return self.by_trigger.get(SCHEDULE, [])

    def rule(self, rule_id: str) -> Rule | None:
        return next((r for r in self.rules if r.id == rule_id), None)

    def summary(self) -> str:
        return (
            f"{len(self.rules)} rules, {len(self.segmentations)} segmentations, "
            f"score thresholds {self.scoring.thresholds}"
        )


def _compile(source: str | None, located: Located, path: tuple[str | int, ...]) -> Expr | None:
    if source is None:
        return None
    try:
        return Expr.compile(source)
    except ExprSyntaxError as exc:
        name = ".".join(str(p) for p in path)
        raise ConfigError(f"{located.where(path)}: {name}: CEL does not compile: {exc}") from None


def compile_rule(spec: RuleSpec, order: int, located: Located, index: int | None) -> Rule:
    prefix: tuple[str | int, ...] = (index,) if index is not None else ()
    condition = _compile(spec.if_, located, (*prefix, "if"))
    actions = []
    for i, action in enumerate(spec.do):
        expr = _compile(action.expr, located, (*prefix, "do", i, "expr"))
        actions.append(Action(i, action, expr))
    return Rule(spec, order, condition, tuple(actions), located.where(prefix))


def _rules(pack: Pack) -> list[Rule]:
    rules: list[Rule] = []
    seen: dict[str, str] = {}
    for located, index, item in pack.items("rules"):
        spec = pack.validate_item(located, index, RuleSpec, item)
        where = located.where((index, "id"))
        if spec.id in seen:
            raise ConfigError(
                f"{where}: {index}.id: rule {spec.id!r} already defined at {seen[spec.id]}"
            )
        seen[spec.id] = where
        rules.append(compile_rule(spec, len(rules), located, index))
    return rules


def _segmentations(pack: Pack) -> list[Segmentation]:
    out: list[Segmentation] = []
    seen: dict[str, str] = {}
    for located, index, item in pack.items("segments"):
        spec = pack.validate_item(located, index, SegmentationSpec, item)
        where = located.where((index, "id"))
        if spec.id in seen:
            raise ConfigError(
                f"{where}: {index}.id: segmentation {spec.id!r} already defined at {seen[spec.id]}"
            )
        seen[spec.id] = where
        values = tuple(
            SegmentValue(v.value, _compile(v.if_, located, (index, "values", i, "if")))
            for i, v in enumerate(spec.values)
        )
        out.append(Segmentation(spec.id, _compile(spec.if_, located, (index, "if")), values, spec))
    return out


def _scoring(pack: Pack) -> ScoringSpec:
    sections = pack.section("scoring")
    if not sections:
        return ScoringSpec()
    if len(sections) > 1:
        places = ", ".join(s.where() for s in sections)
        raise ConfigError(f"scoring: defined more than once ({places})")
    located = sections[0]
    if not isinstance(located.value, dict):
        raise ConfigError(f"{located.where()}: scoring: must be a mapping")
    return pack.validate_item(located, None, ScoringSpec, located.value)


def _check_forced(rules: list[Rule], segmentations: list[Segmentation]) -> None:
    computed = {s.id for s in segmentations}
    for rule in rules:
        for action in rule.actions:
            if action.kind == "segment" and action.spec.segment in computed:
                raise ConfigError(
                    f"{rule.where}: rule {rule.id!r} do.{action.index}.segment: "
                    f"{action.spec.segment!r} is computed by segments:, it cannot be forced"
                )


def load_automation(pack: Pack) -> Automation:
    """Validate and compile the ``rules``, ``segments`` and ``scoring`` sections of a pack."""
    rules = _rules(pack)
    segmentations = _segmentations(pack)
    _check_forced(rules, segmentations)
    return Automation(
        rules=rules, segmentations=segmentations, scoring=_scoring(pack), root=pack.root
    )


def load(directory: Path | None = None) -> Automation:
    """The folder the settings name (or ``./automation``, or the built-in pack), compiled."""
    return load_automation(load_pack(directory))


def from_specs(
    rules: Iterable[RuleSpec],
    segmentations: Iterable[SegmentationSpec] = (),
    scoring: ScoringSpec | None = None,
) -> Automation:
    """Build from models directly (imports, tests); compile errors name the rule id."""
    origin = Located(value=None, file=Path("<specs>"), line=0)
    compiled = [compile_rule(spec, i, origin, i) for i, spec in enumerate(rules)]
    segs = []
    for i, spec in enumerate(segmentations):
        values = tuple(
            SegmentValue(v.value, _compile(v.if_, origin, (i, "values", j, "if")))
            for j, v in enumerate(spec.values)
        )
        segs.append(Segmentation(spec.id, _compile(spec.if_, origin, (i, "if")), values, spec))
    return Automation(rules=compiled, segmentations=segs, scoring=scoring or ScoringSpec())


def export_rules(automation: Automation) -> list[dict[str, Any]]:
    return [rule.spec.export() for rule in automation.rules]
