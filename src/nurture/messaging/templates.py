"""E-mail templates: one folder per template, Jinja2 in a sandbox, strict about undefined names.

A folder holds ``subject.txt``, ``body.html`` and/or ``body.txt``, optionally ``sms.txt`` and
``meta.yaml`` (required variables, sample data, a Brevo template id with its params). A template
that cannot be rendered completely raises ``TemplateError`` naming the file and the variable:
nothing half-rendered is ever sent (the prototypes mailed literal ``{{placeholders}}``).
"""

from __future__ import annotations

import copy
import os
import re
import stat
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jinja2
import yaml
from jinja2.sandbox import SandboxedEnvironment
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from nurture.errors import NurtureError
from nurture.pack import DEFAULTS_DIR, Pack

NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,199}$")
FILES = ("subject.txt", "body.html", "body.txt", "sms.txt")


class TemplateError(NurtureError):
    """A template is missing, invalid, or cannot be rendered with the data at hand."""


class TemplateMeta(BaseModel):
    model_config = ConfigDict(extra="forbid")

    description: str = ""
    # Dotted paths that must be present and non-empty, e.g. ``contact.first_name``.
    required: list[str] = Field(default_factory=list)
    # Merged over the built-in sample data by ``nurture templates check``.
    sample: dict[str, Any] = Field(default_factory=dict)
    # A Brevo-side template, used instead of the files when the provider is Brevo.
    brevo_template_id: int | None = None
    params: dict[str, str] = Field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Rendered:
    subject: str
    html: str | None
    text: str | None
    provider_template: int | None = None
    params: dict[str, Any] = field(default_factory=dict)


SAMPLE: dict[str, Any] = {
    "contact": {
        "id": 1,
        "email": "ann@example.com",
        "first_name": "Ann",
        "last_name": "Example",
        "phone": "+33600000000",
        "time_zone": "Europe/Paris",
        "attributes": {"business_name": "Ann's Salon"},
        "tags": ["customer"],
        "segments": {"value": "VIP", "assessment": "URGENT"},
        "status": "subscribed",
        "score": 85,
        "rfm": {"r": 4, "f": 3, "m": 4, "rfm_score": 3.67},
        "identities": {},
    },
    "event": {
        "id": 1,
        "type": "purchase.completed",
        "occurred_at": datetime(2026, 11, 23, 9, 0, tzinfo=UTC).isoformat(),
        "data": {"order_id": "A-1001", "amount": 120.0, "currency": "EUR", "items": []},
    },
    "enrollment": {"id": 1, "sequence_id": "sample"},
    "step": {"id": "email-1"},
    "unsubscribe_url": "https://example.com/u/sample-token",
    # the shape the recommendation campaign passes (commerce/recommendations.py)
    "recommendations": [
        {
            "rank": 1,
            "product_key": "P-1",
            "name": "Crémant d'Alsace",
            "scenario": "rebuy",
            "reason": "bought 3 time(s), last on 2026-06-02",
        },
        {
            "rank": 2,
            "product_key": "P-2",
            "name": "Riesling Grand Cru",
            "scenario": "cross-sell",
            "reason": "often bought with Crémant d'Alsace",
        },
    ],
}


def _lookup(variables: Mapping[str, Any], path: str) -> Any:
    value: Any = variables
    for part in path.split("."):
        if isinstance(value, Mapping) and part in value:
            value = value[part]
        else:
            return None
    return value


def _deep_merge(base: dict[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


# A template's files and their (mtime, size), or ``None`` for a file that is absent.
Fingerprint = tuple[str, tuple[tuple[int, int] | None, ...]]
WATCHED = (*FILES, "meta.yaml")
STRING_CACHE_SIZE = 512


@dataclass(slots=True)
class _Compiled:
    """One template folder, parsed and compiled once, valid while its fingerprint holds."""

    fingerprint: Fingerprint
    meta: TemplateMeta
    files: dict[str, jinja2.Template]
    checked: float  # time.monotonic() of the last fingerprint check


class TemplateStore:
    """Templates from several folders; the first folder holding a name wins (the automation
    folder's ``templates/`` before the built-in pack).

    Each template is compiled once and kept while its files are unchanged: the files' modification
    times and sizes are looked at again at most every ``recheck_seconds`` (a few ``stat`` calls
    per template, not per e-mail), so an edited template is picked up within that time without a
    restart, as before, and a campaign does not re-read its template for every e-mail.
    """

    def __init__(self, roots: Sequence[Path], *, recheck_seconds: float = 1.0) -> None:
        self.recheck_seconds = recheck_seconds
        self._compiled: dict[str, _Compiled] = {}
        self._lock = threading.Lock()
        self._strings: dict[str, jinja2.Template] = {}
        self.roots = [r for r in roots if r.is_dir()]
        self.env = SandboxedEnvironment(
            loader=jinja2.FileSystemLoader([str(r) for r in self.roots]),
            undefined=jinja2.StrictUndefined,
            autoescape=jinja2.select_autoescape(
                enabled_extensions=("html",), default_for_string=False, default=False
            ),
            keep_trailing_newline=False,
        )
        self.strings = SandboxedEnvironment(undefined=jinja2.StrictUndefined, autoescape=False)

    def names(self) -> list[str]:
        found: set[str] = set()
        for root in self.roots:
            for child in root.iterdir():
                if (
                    child.is_dir()
                    and NAME.match(child.name)
                    and any((child / f).is_file() for f in (*FILES, "meta.yaml"))
                ):
                    found.add(child.name)
        return sorted(found)

    def folder(self, name: str) -> Path:
        if not NAME.match(name):
            raise TemplateError(f"template name {name!r} is not valid (a-z, 0-9, _ and -)")
        for root in self.roots:
            if (root / name).is_dir():
                return root / name
        raise TemplateError(f"template {name!r} not found in {', '.join(map(str, self.roots))}")

    def meta(self, name: str) -> TemplateMeta:
        return self._template(name).meta

    def _template(self, name: str) -> _Compiled:
        cached = self._compiled.get(name)
        now = time.monotonic()
        if cached is not None and now - cached.checked < self.recheck_seconds:
            return cached
        folder = self.folder(name)
        fingerprint = _fingerprint(folder)
        if cached is not None and cached.fingerprint == fingerprint:
            cached.checked = now
            return cached
        with self._lock:  # batches render in threads: compile each version once
            cached = self._compiled.get(name)
            if cached is not None and cached.fingerprint == fingerprint:
                return cached
            compiled = _Compiled(fingerprint, self._read_meta(folder), {}, now)
            for file, stamp in zip(WATCHED, fingerprint[1], strict=True):
                if stamp is not None and file in FILES:
                    compiled.files[file] = self._compile(name, file)
            self._compiled[name] = compiled
        return compiled

    @staticmethod
    def _read_meta(folder: Path) -> TemplateMeta:
        path = folder / "meta.yaml"
        if not path.is_file():
            return TemplateMeta()
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
            return TemplateMeta.model_validate(data)
        except (yaml.YAMLError, ValidationError) as exc:
            raise TemplateError(f"{path}: {exc}") from None

    def _compile(self, name: str, file: str) -> jinja2.Template:
        try:
            return self.env.get_template(f"{name}/{file}")
        except jinja2.TemplateError as exc:
            raise TemplateError(f"template {name}/{file}: {exc}") from None

    def _render_file(self, name: str, file: str, variables: Mapping[str, Any]) -> str | None:
        template = self._template(name).files.get(file)
        if template is None:
            return None
        try:
            return template.render(variables)
        except jinja2.UndefinedError as exc:
            raise TemplateError(
                f"template {name}/{file}: undefined variable: {exc.message}"
            ) from None
        except jinja2.TemplateError as exc:
            raise TemplateError(f"template {name}/{file}: {exc}") from None

    def _check_required(self, name: str, meta: TemplateMeta, variables: Mapping[str, Any]) -> None:
        missing = [p for p in meta.required if _lookup(variables, p) in (None, "", [], {})]
        if missing:
            raise TemplateError(
                f"template {name}: required variable(s) missing: {', '.join(missing)}"
            )

    def render(
        self, name: str, variables: Mapping[str, Any], *, provider_templates: bool = False
    ) -> Rendered:
        meta = self.meta(name)
        self._check_required(name, meta, variables)
        subject = self._render_file(name, "subject.txt", variables)
        subject = " ".join(subject.split()) if subject is not None else ""
        if provider_templates and meta.brevo_template_id is not None:
            params = {
                k: self.render_string(v, variables, where=f"{name}/meta.yaml params.{k}")
                for k, v in meta.params.items()
            }
            return Rendered(subject, None, None, meta.brevo_template_id, params)
        html = self._render_file(name, "body.html", variables)
        text = self._render_file(name, "body.txt", variables)
        if html is None and text is None:
            raise TemplateError(f"template {name}: needs body.html or body.txt")
        if not subject:
            raise TemplateError(f"template {name}: subject.txt is missing or renders empty")
        return Rendered(subject, html, text)

    def render_sms(self, name: str, variables: Mapping[str, Any]) -> str:
        meta = self.meta(name)
        self._check_required(name, meta, variables)
        text = self._render_file(name, "sms.txt", variables)
        if text is None:
            text = self._render_file(name, "body.txt", variables)
        if text is None or not text.strip():
            raise TemplateError(f"template {name}: needs sms.txt (or body.txt) for an SMS")
        return text.strip()

    def render_string(
        self, source: str, variables: Mapping[str, Any], *, where: str = "text"
    ) -> str:
        try:
            return self._string(source).render(variables)
        except jinja2.UndefinedError as exc:
            raise TemplateError(f"{where}: undefined variable: {exc.message}") from None
        except jinja2.TemplateError as exc:
            raise TemplateError(f"{where}: {exc}") from None

    def _string(self, source: str) -> jinja2.Template:
        """Inline templates (payloads, params, SMS texts) compiled once per distinct source."""
        compiled = self._strings.get(source)
        if compiled is None:
            if len(self._strings) >= STRING_CACHE_SIZE:
                self._strings.clear()
            compiled = self._strings[source] = self.strings.from_string(source)
        return compiled

    def sample_for(self, name: str) -> dict[str, Any]:
        return _deep_merge(SAMPLE, self.meta(name).sample)

    def check(self, name: str) -> list[str]:
        """Render every file of a template against its sample data; return the problems."""
        variables = self.sample_for(name)
        problems = []
        try:
            self.render(name, variables)
        except TemplateError as exc:
            problems.append(str(exc))
        if (self.folder(name) / "sms.txt").is_file():
            try:
                self.render_sms(name, variables)
            except TemplateError as exc:
                problems.append(str(exc))
        return problems


def _fingerprint(folder: Path) -> Fingerprint:
    stamps: list[tuple[int, int] | None] = []
    for file in WATCHED:
        try:
            st = os.stat(folder / file)
        except OSError:
            stamps.append(None)
            continue
        stamps.append((st.st_mtime_ns, st.st_size) if stat.S_ISREG(st.st_mode) else None)
    return str(folder), tuple(stamps)


def template_store(pack: Pack) -> TemplateStore:
    """The pack's templates, falling back to the built-in ones for names the pack lacks."""
    roots = [pack.templates_dir]
    if pack.templates_dir != DEFAULTS_DIR / "templates":
        roots.append(DEFAULTS_DIR / "templates")
    return TemplateStore(roots)
