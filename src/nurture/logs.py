"""Structured logs: one JSON object per line, with a stable ``action`` field.

Secrets never reach a log line: settings are not logged, and ``redact`` masks known secret
values if a message or field ever carries one.

Every request writes one line, so formatting is on the webhook hot path: the formatter touches
only the fields a caller added, and ``configure`` turns off the record attributes nurture never
prints (caller frame, thread and process names), which the standard library computes per record.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

import orjson

# uvicorn adds an ANSI-coloured copy of each message for terminals; JSON lines need neither.
_RESERVED = frozenset(vars(logging.makeLogRecord({}))) | {"message", "asctime", "color_message"}
_SECRETS: list[str] = []


def register_secrets(values: Iterable[str]) -> None:
    """Values that must never appear in a log line (API keys, webhook secrets)."""
    for value in values:
        if value and len(value) >= 6 and value not in _SECRETS:
            _SECRETS.append(value)


def redact(text: str) -> str:
    for secret in _SECRETS:
        if secret in text:
            text = text.replace(secret, "***")
    return text


class JsonFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__()
        # The timestamp text up to the second, reused while the second lasts (one tuple, so a
        # thread never pairs one second with another's text).
        self._second: tuple[int, str] = (-1, "")

    def timestamp(self, created: float) -> str:
        second = int(created)
        cached, prefix = self._second
        if second != cached:
            prefix = datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%S")
            self._second = (second, prefix)
        return f"{prefix}.{int((created - second) * 1000):03d}+00:00"

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": self.timestamp(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _RESERVED and key[:1] != "_":
                out[key] = value
        out.setdefault("action", record.name)
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return dumps(out)


def dumps(fields: dict[str, Any]) -> str:
    line = orjson.dumps(fields, default=str).decode()
    return redact(line) if _SECRETS else line


class JsonLineHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """The handler ``configure`` installs: JSON lines on a stream (stderr).

    ``request`` writes the access line of a request answered on the event loop without a
    ``LogRecord`` (building one cost more than the rest of the line) and flushes once at the end
    of the loop's turn instead of once per line: the responses of a group commit all complete in
    the same turn, so they share one write. Other records flush at once, as usual.
    """

    def __init__(self, stream: Any = None) -> None:
        super().__init__(stream)
        self.json = JsonFormatter()
        self.setFormatter(self.json)
        self._flush_pending = False

    def request(self, fields: dict[str, Any], loop: asyncio.AbstractEventLoop) -> None:
        line = dumps({"ts": self.json.timestamp(time.time()), **fields})
        with self.lock:  # type: ignore[union-attr]
            self.stream.write(line + "\n")
            if not self._flush_pending:
                self._flush_pending = True
                loop.call_soon(self._flush_turn)

    def _flush_turn(self) -> None:
        self._flush_pending = False
        self.flush()


_HTTP = logging.getLogger("nurture.http")
_REQUEST = {"level": "info", "logger": "nurture.http", "msg": "request", "action": "http.request"}


def request(method: str, path: str, status: int, ms: float) -> None:
    """The access-log line of one HTTP request, from the event loop (``action: http.request``).

    The same line ``logging`` would write; written directly when the logging set-up is the one
    ``configure`` made, through ``logging`` otherwise (tests capturing records, other handlers).
    """
    if not _HTTP.isEnabledFor(logging.INFO):
        return
    fields = {"method": method, "path": path, "status": status, "ms": ms}
    root = logging.root
    handlers = root.handlers
    if (
        len(handlers) == 1
        and type(handlers[0]) is JsonLineHandler
        and not (_HTTP.handlers or _HTTP.filters or root.filters or handlers[0].filters)
        and _HTTP.propagate
    ):
        handlers[0].request({**_REQUEST, **fields}, asyncio.get_running_loop())
    else:
        _HTTP.info("request", extra={"action": "http.request", **fields})


def configure(level: str = "INFO") -> None:
    handler = JsonLineHandler(sys.stderr)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("uvicorn.access",):
        logging.getLogger(noisy).disabled = True
    # Attributes the JSON lines never show; the standard library would compute them for every
    # record (the caller's frame walk alone is a third of a request's log line). See "Optimization"
    # in the logging HOWTO.
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
