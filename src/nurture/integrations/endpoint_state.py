"""Re-enabling an outbound endpoint that a ``410 Gone`` disabled, for the admin API and the CLI.

Endpoints are declared in the automation folder; only their runtime state (disabled or not)
lives in the database, so a name must be declared there (or have a state row) to be enabled.
"""

from __future__ import annotations

from datetime import datetime

from nurture.database.engine import Database
from nurture.errors import NotFound
from nurture.integrations import outbound
from nurture.pack import Pack
from nurture.storage import endpoints as endpoint_store


def declared(pack: Pack) -> set[str]:
    """Endpoint names in the ``endpoints:`` section (validated in full when the worker starts)."""
    return {
        str(item["name"])
        for _, _, item in pack.items("endpoints")
        if isinstance(item, dict) and item.get("name")
    }


def reenable(db: Database, pack: Pack, name: str, now: datetime) -> bool:
    """Enable ``name`` again; ``True`` if it was disabled. Queued deliveries that already died
    stay dead: retry them (``nurture jobs retry``) once the receiver works."""
    with db.read() as conn:
        was_disabled = endpoint_store.disabled(conn, name) is not None
    if not was_disabled and name not in declared(pack):
        raise NotFound(f"no endpoint named {name!r} in the automation folder")
    if was_disabled:
        outbound.enable(db, name, now)
    return was_disabled
