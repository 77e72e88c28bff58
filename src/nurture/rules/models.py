"""The automation folder's ``rules`` and ``segments`` sections as typed models (``scoring`` is
``core.scoring``).

These are the configuration as written (validated by pydantic so errors name the field); the
compiled, ready-to-run forms live in ``book.py``.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Any, Literal

from croniter import croniter
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from nurture.core.durations import format_duration, parse_duration

RULE_ID = r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,199}$"

# Effects applied in the event's transaction (unless delayed with ``after:``), and effects that
# leave the process (always jobs).
IMMEDIATE_ACTIONS = ("score", "tag", "untag", "set", "segment", "enroll", "exit", "suppress")
EXTERNAL_ACTIONS = ("send_email", "send_sms", "task", "webhook")
ACTION_KINDS = IMMEDIATE_ACTIONS + EXTERNAL_ACTIONS


def _given(value: Any) -> bool:
    # ``score: 0`` is given; ``suppress: false`` is not (identity, since 0 == False).
    return value is not None and value is not False


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class ActionSpec(Strict):
    """One ``do:`` entry: exactly one action key plus its options."""

    score: int | None = None
    reason: str | None = None
    tag: str | None = Field(None, min_length=1, max_length=100)
    untag: str | None = Field(None, min_length=1, max_length=100)
    set: str | None = Field(None, min_length=1, max_length=100)
    value: Any = None
    expr: str | None = None
    segment: str | None = Field(None, min_length=1, max_length=100)
    send_email: str | None = Field(None, min_length=1, max_length=200)
    transactional: bool = False
    vars: dict[str, Any] = Field(default_factory=dict)
    send_sms: str | None = Field(None, min_length=1, max_length=200)
    text: str | None = None
    enroll: str | None = Field(None, min_length=1, max_length=200)
    exit: str | None = Field(None, min_length=1, max_length=200)
    task: str | None = Field(None, min_length=1, max_length=500)
    kind: Literal["task", "call"] = "task"
    priority: str | None = Field(None, max_length=32)
    webhook: str | None = Field(None, min_length=1, max_length=200)
    body: dict[str, Any] | None = None
    # true means a manual suppression; a reason also sets the matching contact status.
    suppress: Literal["unsubscribed", "complained", "bounced", "manual"] | bool | None = None
    after: timedelta | None = None

    @field_validator("after", mode="before")
    @classmethod
    def _after(cls, value: Any) -> timedelta | None:
        return None if value is None else parse_duration(value)

    @property
    def action(self) -> str:
        return next(k for k in ACTION_KINDS if _given(getattr(self, k)))

    @property
    def external(self) -> bool:
        return self.action in EXTERNAL_ACTIONS

    @model_validator(mode="after")
    def _one_action(self) -> ActionSpec:
        present = [k for k in ACTION_KINDS if _given(getattr(self, k))]
        if len(present) != 1:
            found = ", ".join(present) or "none"
            raise ValueError(f"needs exactly one of {', '.join(ACTION_KINDS)} (found {found})")
        action = present[0]
        if action in ("set", "segment"):
            if (self.value is None) == (self.expr is None):
                raise ValueError(f"{action} needs exactly one of value: or expr:")
        elif self.value is not None or self.expr is not None:
            raise ValueError("value:/expr: only go with set: or segment:")
        if action == "send_sms" and self.send_sms is None and self.text is None:
            raise ValueError("send_sms needs a template name or text:")
        # Any action may carry ``after:``; a delayed immediate action becomes a ``rule_action``
        # job that applies it later through the same path (see ``automation/step.py``).
        return self

    def export(self) -> dict[str, Any]:
        out = self.model_dump(mode="json", exclude_defaults=True)
        if self.after is not None:
            out["after"] = format_duration(self.after)
        return out


class RuleSpec(Strict):
    id: str = Field(pattern=RULE_ID)
    on: Annotated[list[str], Field(min_length=1)]
    if_: str | None = Field(None, alias="if")
    cron: str | None = None
    priority: int = Field(50, ge=1, le=100)
    description: str = ""
    enabled: bool = True
    stop: bool = False
    once: str | None = None
    do: Annotated[list[ActionSpec], Field(min_length=1)]

    @model_validator(mode="before")
    @classmethod
    def _yaml_on(cls, data: Any) -> Any:
        # YAML 1.1 reads a bare ``on:`` key as the boolean true.
        if isinstance(data, dict) and True in data and "on" not in data:
            data = {("on" if k is True else k): v for k, v in data.items()}
        return data

    @field_validator("on", mode="before")
    @classmethod
    def _on(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    @field_validator("once")
    @classmethod
    def _once(cls, value: str | None) -> str | None:
        if value is not None and value != "contact":
            parse_duration(value)
        return value

    @model_validator(mode="after")
    def _schedule(self) -> RuleSpec:
        if "schedule" in self.on:
            if self.on != ["schedule"]:
                raise ValueError("on: schedule cannot be combined with event types")
            if not self.cron or not croniter.is_valid(self.cron):
                raise ValueError("on: schedule needs a valid cron: string (e.g. '0 9 * * mon')")
        elif self.cron is not None:
            raise ValueError("cron: only goes with on: schedule")
        return self

    @property
    def once_window(self) -> timedelta | None:
        """``None`` for ``once: contact`` (ever) or no limit; check ``once`` first."""
        return parse_duration(self.once) if self.once not in (None, "contact") else None

    def export(self) -> dict[str, Any]:
        out: dict[str, Any] = {"id": self.id, "on": self.on[0] if len(self.on) == 1 else self.on}
        if self.if_ is not None:
            out["if"] = self.if_
        if self.cron is not None:
            out["cron"] = self.cron
        out.update(priority=self.priority, enabled=self.enabled)
        for name in ("description", "stop", "once"):
            if getattr(self, name):
                out[name] = getattr(self, name)
        out["do"] = [a.export() for a in self.do]
        return out


class SegmentValueSpec(Strict):
    value: str = Field(min_length=1, max_length=100)
    if_: str | None = Field(None, alias="if")


class SegmentationSpec(Strict):
    id: str = Field(pattern=RULE_ID)
    description: str = ""
    if_: str | None = Field(None, alias="if")
    values: Annotated[list[SegmentValueSpec], Field(min_length=1)]
