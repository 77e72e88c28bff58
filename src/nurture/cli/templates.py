"""``nurture templates``: list and check the e-mail templates of the automation folder."""

from __future__ import annotations

from pathlib import Path

import typer

from nurture.cli.common import console, fail, settings
from nurture.errors import NurtureError
from nurture.messaging.templates import template_store
from nurture.pack import load_pack

app = typer.Typer(help="E-mail templates.", no_args_is_help=True)

DIR = typer.Argument(
    None, help="Automation folder [env NURTURE_AUTOMATION_DIR, ./automation, built-in pack]"
)


@app.command("check")
def check(directory: Path | None = DIR) -> None:
    """Render every template against its sample data (meta.yaml ``sample:``); exit 1 on errors."""
    configured = directory or settings().automation_dir
    try:
        store = template_store(load_pack(configured))
        names = store.names()
        problems = {name: store.check(name) for name in names}
    except NurtureError as exc:
        fail(str(exc))
    failed = 0
    for name in names:
        if problems[name]:
            failed += 1
            for problem in problems[name]:
                console.print(f"[red]✗[/] {problem}", highlight=False, soft_wrap=True)
        else:
            console.print(f"[green]✓[/] {name}", highlight=False)
    if failed:
        fail(f"{failed} of {len(names)} templates cannot be rendered")
    console.print(f"{len(names)} templates render completely", highlight=False)
