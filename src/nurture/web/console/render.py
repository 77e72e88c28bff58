"""Rendering console pages: one Jinja2 environment (autoescape on), the navigation, the layout.

Every value that reaches a template is escaped by Jinja2; only ``charts`` returns ``Markup``,
and it escapes every label it draws.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape
from starlette.requests import Request
from starlette.responses import HTMLResponse

from nurture import __version__
from nurture.accounts.sessions import Session

HERE = Path(__file__).parent


@dataclass(frozen=True)
class NavItem:
    label: str
    path: str
    # The page is the current one when the request path starts with this.
    match: str


# Pages add themselves here (see the package docstring); the layout draws them in this order.
NAV: list[NavItem] = []


def add_nav(label: str, path: str, *, match: str | None = None) -> None:
    if all(item.path != path for item in NAV):
        NAV.append(NavItem(label, path, match or path))


def _when(value: datetime | None) -> str:
    if value is None:
        return "never"
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")


def _ago(value: datetime | None, now: datetime) -> str:
    if value is None:
        return "never"
    seconds = (now - value).total_seconds()
    return "just now" if seconds < 1 else duration(seconds) + " ago"


def duration(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    if seconds < 172800:
        return f"{seconds / 3600:.0f} h"
    return f"{seconds / 86400:.0f} d"


def _number(value: int | float | None) -> str:
    if value is None:
        return "-"
    return f"{value:,}".replace(",", "\u202f")


@functools.cache
def environment() -> Environment:
    env = Environment(
        loader=FileSystemLoader(HERE / "templates"),
        autoescape=select_autoescape(default=True, default_for_string=True),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["when"] = _when
    env.filters["number"] = _number
    env.filters["duration"] = duration
    env.globals["ago"] = _ago
    env.globals["version"] = __version__
    return env


def render(
    request: Request,
    session: Session | None,
    template: str,
    *,
    title: str,
    status: int = 200,
    **context: Any,
) -> HTMLResponse:
    current = request.url.path
    nav = [
        {
            "label": i.label,
            "path": i.path,
            "current": current == i.path or (i.match != "/console" and current.startswith(i.match)),
        }
        for i in NAV
    ]
    html = (
        environment()
        .get_template(template)
        .render(
            request=request,
            session=session,
            csrf=session.csrf_token if session else "",
            nav=nav if session else [],
            title=title,
            **context,
        )
    )
    return HTMLResponse(html, status_code=status)
