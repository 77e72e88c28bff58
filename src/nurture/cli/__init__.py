"""The ``nurture`` command line (typer)."""

from __future__ import annotations

from nurture.cli.main import app


def main() -> None:
    app()


__all__ = ["app", "main"]
