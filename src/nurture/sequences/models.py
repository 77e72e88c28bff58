"""The automation folder's ``sequences:`` section: typed models, compiled once at load.

Errors name ``file:line: field`` (``Pack.validate_item``); CEL conditions, keys and anchors are
compiled here, and template names that are Jinja expressions are parsed here, so a typo fails
``nurture check`` rather than the first send.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import jinja2
from jinja2.sandbox import SandboxedEnvironment
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from nurture.core.durations import format_duration, parse_duration
from nurture.errors import ConfigError
from nurture.pack import Located, Pack, load_pack
from nurture.rules.expr import Expr, ExprSyntaxError
from nurture.rules.models import RULE_ID
from nurture.sequences.plan import StepTiming, Window, parse_days, parse_hours, parse_offset

STEP_ID = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$"
CONTACT_KEY = "contact"
_FIELD_PATH = re.compile(r"^event\.data\.([A-Za-z_][A-Za-z0-9_]*)$")
_NAMES = SandboxedEnvironment(undefined=jinja2.StrictUndefined, autoescape=False)


def _event_list(value: Any) -> Any:
    return [value] if isinstance(value, str) else value


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class WindowSpec(Strict):
    hours: str = "08:00-20:00"
    days: str | list[str] = "mon-sun"
    # ``contact``: the contact's time zone (``fallback`` when it has none), or an IANA name.
    timezone: str = CONTACT_KEY
    fallback: str = "UTC"

    @field_validator("hours")
    @classmethod
    def _hours(cls, value: str) -> str:
        parse_hours(value)
        return value

    @field_validator("days")
    @classmethod
    def _days(cls, value: str | list[str]) -> str | list[str]:
        parse_days(value)
        return value

    @field_validator("timezone", "fallback")
    @classmethod
    def _zone(cls, value: str) -> str:
        if value != CONTACT_KEY:
            try:
                ZoneInfo(value)
            except (ZoneInfoNotFoundError, ValueError):
                raise ValueError(
                    f"{value!r} is not an IANA time zone (e.g. Europe/Paris)"
                ) from None
        return value

    def window(self) -> Window:
        start, end = parse_hours(self.hours)
        return Window(start, end, parse_days(self.days))


class StepSpec(Strict):
    id: str = Field(pattern=STEP_ID)
    at: timedelta
    # A template name, or a Jinja expression over ``contact``/``event``/``enrollment`` naming one.
    send_email: str = Field(min_length=1, max_length=300)
    if_: str | None = Field(None, alias="if")
    exact: bool = False
    transactional: bool = False
    description: str = ""

    @field_validator("at", mode="before")
    @classmethod
    def _at(cls, value: Any) -> timedelta:
        return parse_offset(value)

    @field_validator("send_email")
    @classmethod
    def _template(cls, value: str) -> str:
        try:
            _NAMES.parse(value)
        except jinja2.TemplateSyntaxError as exc:
            raise ValueError(f"template name does not parse: {exc.message}") from None
        return value


class SequenceSpec(Strict):
    id: str = Field(pattern=RULE_ID)
    description: str = ""
    enabled: bool = True
    enroll_on: list[str] = Field(default_factory=list)
    if_: str | None = Field(None, alias="if")
    key: str = CONTACT_KEY
    reentry: Literal["never", "after_exit", "always"] = "after_exit"
    exit_on: list[str] = Field(default_factory=list)
    anchor: str | None = None
    min_lead: timedelta | None = None
    reschedule_on: list[str] = Field(default_factory=list)
    # The key of the booking a reschedule replaces; by default ``event.data.previous_<field>``
    # when ``key`` is ``event.data.<field>`` (Cal.com: booking_uid / previous_booking_uid).
    previous_key: str | None = None
    cancel_on: list[str] = Field(default_factory=list)
    window: WindowSpec | None = None
    steps: Annotated[list[StepSpec], Field(min_length=1)]

    @field_validator("enroll_on", "exit_on", "reschedule_on", "cancel_on", mode="before")
    @classmethod
    def _lists(cls, value: Any) -> Any:
        return _event_list(value)

    @field_validator("min_lead", mode="before")
    @classmethod
    def _min_lead(cls, value: Any) -> timedelta | None:
        return None if value is None else parse_duration(value)

    @model_validator(mode="after")
    def _coherent(self) -> SequenceSpec:
        ids = [s.id for s in self.steps]
        dupes = sorted({i for i in ids if ids.count(i) > 1})
        if dupes:
            raise ValueError(f"step ids must be unique (repeated: {', '.join(dupes)})")
        if self.anchor is None and any(s.at < timedelta(0) for s in self.steps):
            raise ValueError("a step before the anchor (negative at:) needs anchor:")
        if self.min_lead is not None and self.anchor is None:
            raise ValueError("min_lead: only applies with anchor:")
        if (self.reschedule_on or self.cancel_on) and self.key == CONTACT_KEY:
            raise ValueError("reschedule_on:/cancel_on: need a key: naming the booking")
        if self.reschedule_on and self.anchor is None:
            raise ValueError("reschedule_on: needs anchor: (the time that moves)")
        if self.reschedule_on and self.previous_key is None and default_previous(self.key) is None:
            raise ValueError("reschedule_on: needs previous_key: (the replaced booking's key)")
        return self


def default_previous(key: str) -> str | None:
    match = _FIELD_PATH.match(key.strip())
    return f"event.data.previous_{match.group(1)}" if match else None


@dataclass(frozen=True)
class Step:
    spec: StepSpec
    position: int
    condition: Expr | None
    # ``None``: the name is fixed (``template``); otherwise render ``spec.send_email`` first.
    template: str | None

    @property
    def id(self) -> str:
        return self.spec.id

    @property
    def timing(self) -> StepTiming:
        return StepTiming(self.spec.id, self.spec.at, self.spec.exact)


@dataclass(frozen=True)
class Sequence:
    spec: SequenceSpec
    where: str
    condition: Expr | None
    key: Expr | None  # ``None``: per contact
    previous_key: Expr | None
    anchor: Expr | None
    steps: tuple[Step, ...]
    window: Window | None = None

    @property
    def id(self) -> str:
        return self.spec.id

    def step(self, step_id: str) -> Step | None:
        return next((s for s in self.steps if s.id == step_id), None)

    @functools.cached_property
    def timings(self) -> tuple[StepTiming, ...]:
        # Read on every enrolment: built once (a frozen dataclass caches into its __dict__).
        return tuple(s.timing for s in self.steps)

    def describe(self) -> dict[str, Any]:
        s = self.spec
        out: dict[str, Any] = {
            "id": s.id,
            "description": s.description,
            "enabled": s.enabled,
            "enroll_on": s.enroll_on,
            "if": s.if_,
            "key": s.key,
            "reentry": s.reentry,
            "exit_on": s.exit_on,
            "anchor": s.anchor,
            "min_lead": format_duration(s.min_lead) if s.min_lead is not None else None,
            "reschedule_on": s.reschedule_on,
            "cancel_on": s.cancel_on,
            "window": s.window.model_dump() if s.window is not None else None,
            "steps": [
                {
                    "id": st.spec.id,
                    "at": _signed(st.spec.at),
                    "send_email": st.spec.send_email,
                    "if": st.spec.if_,
                    "exact": st.spec.exact,
                    "transactional": st.spec.transactional,
                }
                for st in self.steps
            ],
        }
        return out


def _signed(delta: timedelta) -> str:
    return "-" + format_duration(-delta) if delta < timedelta(0) else format_duration(delta)


@dataclass
class SequenceBook:
    sequences: list[Sequence] = field(default_factory=list)
    root: Path | None = None

    def __post_init__(self) -> None:
        self.by_id = {s.id: s for s in self.sequences}

    def get(self, sequence_id: str) -> Sequence | None:
        return self.by_id.get(sequence_id)

    @property
    def enabled(self) -> list[Sequence]:
        return [s for s in self.sequences if s.spec.enabled]

    def summary(self) -> str:
        steps = sum(len(s.steps) for s in self.sequences)
        return f"{len(self.sequences)} sequences, {steps} steps"


def _compile(source: str | None, located: Located, path: tuple[str | int, ...]) -> Expr | None:
    if source is None:
        return None
    try:
        return Expr.compile(source)
    except ExprSyntaxError as exc:
        name = ".".join(str(p) for p in path)
        raise ConfigError(f"{located.where(path)}: {name}: CEL does not compile: {exc}") from None


def compile_sequence(spec: SequenceSpec, located: Located, index: int | None) -> Sequence:
    prefix: tuple[str | int, ...] = (index,) if index is not None else ()
    steps = []
    for i, st in enumerate(spec.steps):
        dynamic = "{{" in st.send_email or "{%" in st.send_email
        steps.append(
            Step(
                st,
                i,
                _compile(st.if_, located, (*prefix, "steps", i, "if")),
                None if dynamic else st.send_email,
            )
        )
    key = None if spec.key == CONTACT_KEY else _compile(spec.key, located, (*prefix, "key"))
    previous = spec.previous_key or (default_previous(spec.key) if spec.reschedule_on else None)
    return Sequence(
        spec=spec,
        where=located.where(prefix),
        condition=_compile(spec.if_, located, (*prefix, "if")),
        key=key,
        previous_key=_compile(previous, located, (*prefix, "previous_key")),
        anchor=_compile(spec.anchor, located, (*prefix, "anchor")),
        steps=tuple(steps),
        window=spec.window.window() if spec.window is not None else None,
    )


def load_book(pack: Pack) -> SequenceBook:
    """Validate and compile the ``sequences`` section (errors say file:line: field)."""
    out: list[Sequence] = []
    seen: dict[str, str] = {}
    for located, index, item in pack.items("sequences"):
        spec = pack.validate_item(located, index, SequenceSpec, item)
        where = located.where((index, "id"))
        if spec.id in seen:
            raise ConfigError(
                f"{where}: {index}.id: sequence {spec.id!r} already defined at {seen[spec.id]}"
            )
        seen[spec.id] = where
        out.append(compile_sequence(spec, located, index))
    return SequenceBook(out, pack.root)


def load(directory: Path | None = None) -> SequenceBook:
    return load_book(load_pack(directory))


def check_templates(book: SequenceBook, names: set[str]) -> list[str]:
    """Fixed template names that no template folder holds (dynamic names are checked at send)."""
    problems = []
    for seq in book.sequences:
        for st in seq.steps:
            if st.template is not None and st.template not in names:
                problems.append(
                    f"{seq.where}: sequence {seq.id!r} step {st.id!r}: "
                    f"template {st.template!r} not found"
                )
    return problems


def check_rule_targets(book: SequenceBook, targets: list[tuple[str, str]]) -> list[str]:
    """``enroll``/``exit`` rule actions naming a sequence that does not exist ((rule, target))."""
    return [
        f"rule {rule!r}: sequence {target!r} is not defined in sequences:"
        for rule, target in targets
        if target != "all" and book.get(target) is None
    ]
