"""Shared CLI plumbing: settings from the environment, once, with a readable error."""

from __future__ import annotations

from typing import Any, NoReturn

import typer
from rich.console import Console

from nurture.bootstrap import Container, build_container
from nurture.config import Settings, load_settings
from nurture.errors import NurtureError

console = Console()
err_console = Console(stderr=True)


def fail(message: str, code: int = 1) -> NoReturn:
    err_console.print(f"[bold red]error:[/] {message}", highlight=False)
    raise typer.Exit(code)


def settings(**overrides: Any) -> Settings:
    try:
        return load_settings(**{k: v for k, v in overrides.items() if v is not None})
    except NurtureError as exc:
        fail(str(exc))


def container(**overrides: Any) -> Container:
    try:
        return build_container(settings(**overrides))
    except NurtureError as exc:  # e.g. a provider chosen without its credentials
        fail(str(exc))
