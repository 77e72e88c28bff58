"""Form submissions (signups, assessments) -> ``form.submitted`` with the validated fields.

Each form is declared in the automation folder (``forms:``). A submission is signed with
Standard Webhooks (a server posting it) or carries a publishable write key (a browser, only for
forms that allow it); JSON or ``application/x-www-form-urlencoded``. Every invalid field is
listed in one 422.
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Annotated, Any
from urllib.parse import parse_qsl

from pydantic import AfterValidator, AliasChoices, BaseModel, ConfigDict, Field, ValidationError
from pydantic import create_model as pydantic_model

from nurture.core.events import ContactRef, InboundEvent, content_hash, normalise_email
from nurture.errors import (
    FieldProblem,
    InvalidFields,
    MalformedPayload,
    NotConfigured,
    Unauthenticated,
)
from nurture.providers.forms.spec import FieldSpec, FormSpec
from nurture.providers.payloads import load_json
from nurture.providers.signing import STANDARD_HEADERS, has_standard_headers, verify_standard

FORM_MEDIA = "application/x-www-form-urlencoded"
WRITE_KEY_HEADER = "x-nurture-write-key"
# A double opt-in form's submission before the person confirmed it.
UNCONFIRMED = "form.unconfirmed"


def _email(value: str) -> str:
    email = normalise_email(value)
    if email is None:
        raise ValueError("is not a valid e-mail address")
    return email


PY_TYPES: dict[str, Any] = {
    "string": str,
    "email": Annotated[str, AfterValidator(_email)],
    "integer": int,
    "number": float,
    "boolean": bool,
}


def spellings(name: str, extra: Sequence[str]) -> list[str]:
    """``weakest_system_1`` -> also ``weakestSystem1`` and ``WeakestSystem1``."""
    head, *rest = name.split("_")
    camel = head + "".join(part[:1].upper() + part[1:] for part in rest)
    pascal = camel[:1].upper() + camel[1:]
    out = [name]
    for candidate in (camel, pascal, *extra):
        if candidate not in out:
            out.append(candidate)
    return out


def _annotation(spec: FieldSpec) -> Any:
    if spec.type == "choice":
        assert spec.choices is not None
        choices = frozenset(spec.choices)

        def one_of(value: str) -> str:
            if value not in choices:
                raise ValueError("must be one of " + ", ".join(sorted(choices)))
            return value

        return Annotated[str, AfterValidator(one_of)]
    return PY_TYPES[spec.type]


def build_model(form: FormSpec) -> type[BaseModel]:
    definitions: dict[str, Any] = {}
    for name, spec in form.fields.items():
        annotation = _annotation(spec)
        if not spec.required:
            annotation = annotation | None
        definitions[name] = (
            annotation,
            Field(
                default=... if spec.required else spec.default,
                ge=spec.min,
                le=spec.max,
                max_length=spec.max_length,
                validation_alias=AliasChoices(*spellings(name, spec.aliases)),
            ),
        )
    config = ConfigDict(extra="ignore", str_strip_whitespace=True)
    model: type[BaseModel] = pydantic_model(
        "Form_" + form.id.replace("-", "_"), __config__=config, **definitions
    )
    return model


class FormSource:
    """One declared form behind ``/webhooks/forms/{form_id}``: its spec, validator and secrets."""

    name = "forms"

    def __init__(
        self,
        spec: FormSpec,
        secrets: Sequence[str],
        write_keys: Sequence[str] = (),
        *,
        tolerance: int = 300,
    ) -> None:
        self.spec = spec
        self.secrets = list(secrets)
        self.write_keys = list(write_keys) if spec.write_key else []
        self.tolerance = tolerance
        self.model = build_model(spec)
        self.alias_to_field = {
            alias: name
            for name, field in spec.fields.items()
            for alias in spellings(name, field.aliases)
        }

    def validate(self, values: Mapping[str, Any]) -> dict[str, Any]:
        # An empty numeric/choice input in an HTML form means "not given"; an empty text field
        # is an empty string (the prototype accepted an empty first_name).
        cleaned = {k: v for k, v in values.items() if not self._blank(k, v)}
        try:
            parsed = self.model.model_validate(cleaned)
        except ValidationError as exc:
            problems = []
            for err in exc.errors():
                loc = err["loc"]
                name = self.alias_to_field.get(str(loc[0]), str(loc[0])) if loc else "body"
                message = "is required" if err["type"] == "missing" else err["msg"]
                problems.append(FieldProblem(name, message.removeprefix("Value error, ")))
            raise InvalidFields(problems) from None
        return parsed.model_dump()

    def _blank(self, key: str, value: Any) -> bool:
        if value is None:
            return True
        name = self.alias_to_field.get(key)
        text = name is not None and self.spec.fields[name].type == "string"
        return value == "" and not text

    def authenticate(
        self, headers: Mapping[str, str], raw: bytes, now: datetime, query: Mapping[str, str]
    ) -> str:
        """Return ``"signed"`` or ``"write_key"``; raise otherwise."""
        spec = self.spec
        if not self.secrets and not self.write_keys:
            hint = spec.secret_env + (" or NURTURE_WRITE_KEYS" if spec.write_key else "")
            raise NotConfigured(f"source 'forms/{spec.id}' is not configured: set {hint}")
        if has_standard_headers(headers):
            if not self.secrets:
                raise Unauthenticated(f"signed submissions need {spec.secret_env}")
            verify_standard(headers, raw, self.secrets, now, tolerance=self.tolerance)
            return "signed"
        auth = headers.get("authorization", "")
        key = (
            auth[7:].strip()
            if auth.lower().startswith("bearer ")
            else headers.get(WRITE_KEY_HEADER) or query.get("write_key")
        )
        if not key:
            raise Unauthenticated("missing signature or write key")
        ok = False
        for candidate in self.write_keys:
            ok |= hmac.compare_digest(candidate.encode(), key.encode())
        if not ok:
            raise Unauthenticated("unknown write key")
        return "write_key"

    def verify(self, headers: Mapping[str, str], raw_body: bytes, now: datetime) -> None:
        self.authenticate(headers, raw_body, now, {})

    def parse(
        self, raw_body: bytes, headers: Mapping[str, str], client_addr: str | None = None
    ) -> list[InboundEvent]:
        """``client_addr``: where the submission came from, recorded with the consent."""
        media = headers.get("content-type", "").split(";", 1)[0].strip().lower()
        values: Any
        if media == FORM_MEDIA:
            try:
                values = dict(parse_qsl(raw_body.decode(), keep_blank_values=True))
            except UnicodeDecodeError:
                raise MalformedPayload("form body is not UTF-8") from None
        else:
            values = load_json(raw_body)
            if not isinstance(values, dict):
                raise MalformedPayload("body must be a JSON object of form fields")
        fields = self.validate(values)
        spec = self.spec
        traits = {
            trait: fields[name]
            for trait, name in spec.contact.traits.items()
            if fields.get(name) is not None
        }
        submission = values.get("submission_id")
        if STANDARD_HEADERS[0] in headers:
            key = "id:" + headers[STANDARD_HEADERS[0]]
        elif isinstance(submission, str | int) and str(submission):
            key = f"sub:{submission}"
        else:
            key = content_hash(spec.id, fields)
        data: dict[str, Any] = {"form": spec.id, **fields}
        event_type = spec.event_type
        if spec.consent is not None:
            consent = spec.consent
            data["consent"] = {
                "text": consent.text,
                "version": consent.version,
                "fields": {name: fields.get(name) for name in consent.fields},
                "client_addr": client_addr,
                "double_opt_in": consent.double_opt_in,
            }
            if consent.double_opt_in:
                # Rules and sequences see ``event_type`` only once the person confirms.
                data["consent"].update(then=event_type, confirm_template=consent.confirm_template)
                event_type = UNCONFIRMED
        return [
            InboundEvent(
                source=self.name,
                type=event_type,
                dedupe_key=f"{spec.id}:{key}",
                # the spec requires the e-mail field, so a valid submission always names a contact
                contact=ContactRef(email=fields[spec.contact.email], traits=traits),
                data=data,
            )
        ]
