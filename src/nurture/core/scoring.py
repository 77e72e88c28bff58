"""The automation folder's ``scoring`` section: the lead score's weights, as a typed model.

It lives in ``core`` because both the pure scorer (``analytics.scoring``) and the rules'
configuration (``rules.book``) read it; neither may import the other's package for it.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from nurture.core.durations import parse_duration


class RecencyBand(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    up_to: int = Field(ge=0)
    penalty: int = Field(ge=0)


class ScoringSpec(BaseModel):
    """Weights of SPEC §4; the defaults reproduce the prototype's ``ScoreCalculator``."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    base: int = 50
    min: int = 0
    max: int = 100
    rfm_weight: float = 10
    rfm_max: float = 4
    engagement_event_weight: int = 2
    engagement_event_cap: int = 20
    purchase_weight: int = 5
    purchase_cap: int = 25
    recency_bands: list[RecencyBand] = Field(
        default_factory=lambda: [
            RecencyBand(up_to=30, penalty=0),
            RecencyBand(up_to=90, penalty=5),
            RecencyBand(up_to=180, penalty=15),
        ]
    )
    recency_beyond: int = Field(30, ge=0)
    half_life: timedelta | None = None
    # RFM bands belong to the purchases feature, which validates this sub-key itself.
    rfm: dict[str, Any] | None = None
    thresholds: list[int] = Field(default_factory=lambda: [80])
    engagement_events: list[str] = Field(
        default_factory=lambda: [
            "email.opened",
            "email.clicked",
            "page.viewed",
            "link.clicked",
            "form.submitted",
        ]
    )

    @field_validator("half_life", mode="before")
    @classmethod
    def _half_life(cls, value: Any) -> timedelta | None:
        if value is None:
            return None
        delta = parse_duration(value)
        if delta.total_seconds() <= 0:
            raise ValueError("must be positive")
        return delta

    @model_validator(mode="after")
    def _order(self) -> ScoringSpec:
        if self.min >= self.max:
            raise ValueError("min must be below max")
        ups = [b.up_to for b in self.recency_bands]
        if ups != sorted(set(ups)):
            raise ValueError("recency_bands must be in increasing up_to order")
        return self
