"""``nurture endpoints enable NAME``: re-enable an outbound endpoint a ``410 Gone`` disabled."""

from __future__ import annotations

import typer

from nurture.cli.common import console, container, fail
from nurture.errors import NurtureError
from nurture.integrations import endpoint_state
from nurture.pack import load_pack

app = typer.Typer(help="Outbound webhook endpoints.", no_args_is_help=True)


@app.command("enable")
def enable(
    name: str = typer.Argument(..., help="The endpoint's name in the automation folder"),
) -> None:
    """Enable an endpoint again after its receiver is fixed (retry its dead jobs afterwards)."""
    c = container()
    try:
        was_disabled = endpoint_state.reenable(
            c.db, load_pack(c.settings.automation_dir), name, c.clock.now()
        )
    except NurtureError as exc:
        fail(str(exc))
    finally:
        c.close()
    state = "enabled again" if was_disabled else "was not disabled"
    console.print(f"endpoint {name!r} {state}", highlight=False)
