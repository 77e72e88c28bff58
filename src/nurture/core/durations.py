"""Durations as the automation folder writes them: ``30s``, ``5m``, ``24h``, ``2d``, ``1h30m``."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

DURATION = re.compile(r"^(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?$")


def parse_duration(value: Any) -> timedelta:
    """``30s``, ``5m``, ``24h``, ``2d``, ``1h30m``; a bare integer is seconds."""
    if isinstance(value, bool):
        raise ValueError("must be a duration like 5m, 24h or 2d")
    if isinstance(value, int):
        seconds = value
    else:
        match = DURATION.match(str(value).strip())
        if not match or not any(match.groups()):
            raise ValueError(f"{value!r} is not a duration like 30s, 5m, 24h, 2d or 1h30m")
        d, h, m, s = (int(g or 0) for g in match.groups())
        seconds = ((d * 24 + h) * 60 + m) * 60 + s
    if seconds < 0:
        raise ValueError("must not be negative")
    return timedelta(seconds=seconds)


def format_duration(delta: timedelta) -> str:
    seconds = int(delta.total_seconds())
    out = ""
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if seconds >= size:
            out += f"{seconds // size}{unit}"
            seconds %= size
    return out or "0s"
