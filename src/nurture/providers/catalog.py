"""Which inbound sources an installation runs: the ``sources:`` and ``forms:`` sections.

Secrets are named by environment variable (``secret_env``) and read through ``Settings``; the
automation folder never holds a secret. A source whose variable is unset stays declared but
answers 404 "not configured" and accepts nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from nurture.config import Settings
from nurture.errors import ConfigError
from nurture.pack import Pack
from nurture.providers.brevo.inbound import BrevoSource
from nurture.providers.calcom.inbound import CalcomSource
from nurture.providers.forms.inbound import FormSource
from nurture.providers.forms.spec import FormSpec
from nurture.providers.generic.inbound import GenericMapping, GenericSource
from nurture.providers.resend.inbound import ResendSource
from nurture.providers.stripe.inbound import StripeSource

ENV_NAME = r"^NURTURE_[A-Z0-9_]+$"
SOURCE_ID = r"^[a-z][a-z0-9_-]{0,63}$"


class _Base(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    secret_env: str = Field(pattern=ENV_NAME)
    tolerance_seconds: int | None = Field(default=None, ge=1, le=3600)


class BrevoConfig(_Base):
    type: Literal["brevo"]
    id: Literal["brevo"] = "brevo"
    ip_allowlist: list[str] = Field(default_factory=list)


class ResendConfig(_Base):
    type: Literal["resend"]
    id: Literal["resend"] = "resend"


class CalcomConfig(_Base):
    type: Literal["calcom"]
    id: Literal["calcom"] = "calcom"


class StripeConfig(_Base):
    type: Literal["stripe"]
    id: Literal["stripe"] = "stripe"


class GenericConfig(_Base):
    type: Literal["generic"]
    id: str = Field(pattern=SOURCE_ID)
    mapping: GenericMapping = Field(default_factory=GenericMapping)


SourceConfig = BrevoConfig | ResendConfig | CalcomConfig | StripeConfig | GenericConfig
MODELS: dict[str, type[SourceConfig]] = {
    "brevo": BrevoConfig,
    "resend": ResendConfig,
    "calcom": CalcomConfig,
    "stripe": StripeConfig,
    "generic": GenericConfig,
}


@dataclass
class Sources:
    """The built sources: provider sources by id, generic ones by id, forms by id."""

    providers: dict[str, BrevoSource | ResendSource | CalcomSource | StripeSource] = field(
        default_factory=dict
    )
    generic: dict[str, GenericSource] = field(default_factory=dict)
    forms: dict[str, FormSource] = field(default_factory=dict)


def _validate_ip(networks: list[str], where: str) -> None:
    import ipaddress

    for net in networks:
        try:
            ipaddress.ip_network(net, strict=False)
        except ValueError:
            raise ConfigError(f"{where}: ip_allowlist: {net!r} is not an IP network") from None


def build_sources(settings: Settings, pack: Pack) -> Sources:
    """Validate ``sources:`` and ``forms:`` (errors say ``file:line: field``) and build them."""
    out = Sources()
    default_tolerance = settings.signature_tolerance_seconds
    for located, index, item in pack.items("sources"):
        where = located.where((index,))
        kind = item.get("type") if isinstance(item, dict) else None
        if kind not in MODELS:
            raise ConfigError(
                f"{located.where((index, 'type'))}: sources.{index}.type: "
                f"must be one of {', '.join(MODELS)}"
            )
        cfg = pack.validate_item(located, index, MODELS[kind], item)
        if cfg.id in out.providers or cfg.id in out.generic:
            raise ConfigError(f"{where}: sources.{index}.id: {cfg.id!r} is declared twice")
        secrets = settings.secret_values(cfg.secret_env)
        tolerance = cfg.tolerance_seconds or default_tolerance
        if isinstance(cfg, BrevoConfig):
            _validate_ip(cfg.ip_allowlist, where)
            out.providers["brevo"] = BrevoSource(
                secrets,
                ip_allowlist=cfg.ip_allowlist,
                max_events=settings.max_batch_events,
                secret_env=cfg.secret_env,
            )
        elif isinstance(cfg, ResendConfig):
            out.providers["resend"] = ResendSource(
                secrets, tolerance=tolerance, secret_env=cfg.secret_env
            )
        elif isinstance(cfg, CalcomConfig):
            out.providers["calcom"] = CalcomSource(secrets, secret_env=cfg.secret_env)
        elif isinstance(cfg, StripeConfig):
            out.providers["stripe"] = StripeSource(
                secrets, tolerance=tolerance, secret_env=cfg.secret_env
            )
        else:
            out.generic[cfg.id] = GenericSource(
                cfg.id, secrets, cfg.mapping, tolerance=tolerance, secret_env=cfg.secret_env
            )
    for located, index, item in pack.items("forms"):
        spec = pack.validate_item(located, index, FormSpec, item)
        if spec.id in out.forms:
            where = located.where((index,))
            raise ConfigError(f"{where}: forms.{index}.id: {spec.id!r} is declared twice")
        out.forms[spec.id] = FormSource(
            spec,
            settings.secret_values(spec.secret_env),
            settings.write_key_list,
            tolerance=default_tolerance,
        )
    return out
