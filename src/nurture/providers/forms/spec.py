"""The ``forms:`` section of the automation folder: typed fields and their contact mapping."""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

FORM_ID = r"^[a-z0-9][a-z0-9_-]{0,63}$"
FIELD_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


class FieldSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    type: Literal["string", "email", "integer", "number", "boolean", "choice"] = "string"
    required: bool = False
    default: Any = None
    min: float | None = None
    max: float | None = None
    max_length: int | None = Field(default=None, ge=1)
    choices: list[str] | None = None
    # Other spellings a website may send; camelCase and PascalCase are accepted without listing.
    aliases: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _consistent(self) -> FieldSpec:
        if self.type == "choice" and not self.choices:
            raise ValueError("type choice needs choices")
        if (self.min is not None or self.max is not None) and self.type not in (
            "integer",
            "number",
        ):
            raise ValueError("min/max apply to integer and number fields")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError("min is greater than max")
        return self


class ContactMapping(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    email: str = "email"
    # contact trait -> form field (profile fields like first_name, or any attribute)
    traits: dict[str, str] = Field(default_factory=dict)


class ConsentSpec(BaseModel):
    """What a signup agrees to. Every submission records ``text`` and ``version``, the values
    of ``fields`` (checkboxes) as submitted, the time and the sender's address."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    text: str = Field(min_length=1, max_length=2000)
    version: str | None = Field(default=None, max_length=100)
    fields: list[str] = Field(default_factory=list)
    # A confirmation e-mail with a signed link; no marketing mail and no ``event_type`` event
    # (so no rule or sequence) until the person confirms.
    double_opt_in: bool = False
    confirm_template: str = "confirm_subscription"


class FormSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(pattern=FORM_ID)
    secret_env: str = Field(default="NURTURE_FORMS_SECRET", pattern=r"^NURTURE_[A-Z0-9_]+$")
    # Also accept the publishable NURTURE_WRITE_KEYS (a form posted straight from a browser).
    write_key: bool = False
    event_type: str = Field(default="form.submitted", pattern=r"^[a-z][a-z0-9_]*(\.[a-z0-9_]+)+$")
    fields: dict[str, FieldSpec]
    contact: ContactMapping = Field(default_factory=ContactMapping)
    consent: ConsentSpec | None = None

    @model_validator(mode="after")
    def _mapping_names_fields(self) -> FormSpec:
        for name in self.fields:
            if not FIELD_NAME.match(name):
                raise ValueError(f"field name {name!r} must be snake_case")
        if self.contact.email not in self.fields:
            raise ValueError(f"contact.email names {self.contact.email!r}, which is not a field")
        email = self.fields[self.contact.email]
        if email.type != "email" or not email.required:
            raise ValueError(f"contact.email field {self.contact.email!r} must be a required email")
        for trait, name in self.contact.traits.items():
            if name not in self.fields:
                raise ValueError(f"contact.traits.{trait} names {name!r}, which is not a field")
        for name in self.consent.fields if self.consent else []:
            if name not in self.fields:
                raise ValueError(f"consent.fields names {name!r}, which is not a field")
        return self
