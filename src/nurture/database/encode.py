"""Values encoded for driver-level statements exactly as the Core column types would write them.

The bulk writes of the hot paths (inbox, timeline, score ledger) skip SQLAlchemy's per-value type
processing, which cost several times the insert itself; what they bind must still read back
through ``UtcDateTime`` and ``Json`` as if Core had written it.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson


def sqlite_time(value: datetime | None) -> str | None:
    """The text SQLAlchemy's SQLite DATETIME writes for a UTC time (``%Y-%m-%d %H:%M:%S.%f``;
    ``isoformat`` writes the same several times faster). Naive times are refused, as
    ``UtcDateTime`` refuses them: they would silently shift by the local offset."""
    if value is None:
        return None
    if value.tzinfo is None:
        raise ValueError(f"naive value for a UTC column: {value!r}")
    return value.astimezone(UTC).replace(tzinfo=None).isoformat(" ", "microseconds")


def read_sqlite_time(value: str) -> datetime:
    """``sqlite_time``'s text back to an aware UTC time, as ``UtcDateTime`` reads it."""
    return datetime.fromisoformat(value).replace(tzinfo=UTC)


def json_text(value: Any) -> str:
    """What the engines' ``json_serializer`` writes."""
    return orjson.dumps(value, default=str).decode()
