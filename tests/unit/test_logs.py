"""The JSON log line: fields, order, timestamp, redaction."""

from __future__ import annotations

import asyncio
import io
import logging
from datetime import UTC, datetime

import orjson
import pytest

from nurture import logs


def record(msg: str = "request", **extra: object) -> logging.LogRecord:
    rec = logging.getLogger("nurture.http").makeRecord(
        "nurture.http", logging.INFO, "", 0, msg, (), None, extra=extra
    )
    rec.created = datetime(2026, 11, 23, 9, 0, 1, 234567, tzinfo=UTC).timestamp()
    return rec


def test_one_json_object_with_the_extras_in_order() -> None:
    fmt = logs.JsonFormatter()
    line = fmt.format(record(action="http.request", method="POST", path="/x", status=202, ms=1.5))
    assert "\n" not in line
    assert list(orjson.loads(line).items()) == [
        ("ts", "2026-11-23T09:00:01.234+00:00"),
        ("level", "info"),
        ("logger", "nurture.http"),
        ("msg", "request"),
        ("action", "http.request"),
        ("method", "POST"),
        ("path", "/x"),
        ("status", 202),
        ("ms", 1.5),
    ]


def test_action_defaults_to_the_logger_and_the_timestamp_follows_the_clock() -> None:
    fmt = logs.JsonFormatter()
    first = orjson.loads(fmt.format(record("a")))
    later = record("b")
    later.created += 61.5  # a new second: the cached prefix must not be reused
    second = orjson.loads(fmt.format(later))
    assert first["action"] == "nurture.http"
    assert first["ts"] == "2026-11-23T09:00:01.234+00:00"
    assert second["ts"] == "2026-11-23T09:01:02.734+00:00"


def test_registered_secrets_are_masked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(logs, "_SECRETS", [])
    logs.register_secrets(["whsec_topsecretvalue"])
    line = logs.JsonFormatter().format(
        record("key whsec_topsecretvalue", header="whsec_topsecretvalue")
    )
    assert "topsecret" not in line
    assert orjson.loads(line)["msg"] == "key ***"


def test_uvicorn_color_message_and_private_fields_are_left_out() -> None:
    line = logs.JsonFormatter().format(record("started", color_message="\x1b[1mstarted", _x=1))
    assert set(orjson.loads(line)) == {"ts", "level", "logger", "msg", "action"}


class Stream(io.StringIO):
    flushes = 0

    def flush(self) -> None:
        self.flushes += 1
        super().flush()


def test_request_lines_are_written_directly_and_flushed_once_per_loop_turn(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    stream = Stream()
    monkeypatch.setattr(logging.root, "handlers", [logs.JsonLineHandler(stream)])
    level = logging.root.level
    logging.root.setLevel(logging.INFO)

    async def turn() -> tuple[int, int]:
        logs.request("POST", "/webhooks/track", 202, 1.5)
        logs.request("POST", "/webhooks/track", 200, 0.25)
        before = stream.flushes
        await asyncio.sleep(0)  # the end of this turn of the loop
        return before, stream.flushes

    try:
        assert asyncio.run(turn()) == (0, 1)
    finally:
        logging.root.setLevel(level)
    lines = [orjson.loads(line) for line in stream.getvalue().splitlines()]
    assert [list(line) for line in lines] == [
        ["ts", "level", "logger", "msg", "action", "method", "path", "status", "ms"]
    ] * 2
    assert lines[0]["action"] == "http.request" and lines[0]["logger"] == "nurture.http"
    assert [(line["status"], line["ms"]) for line in lines] == [(202, 1.5), (200, 0.25)]


def test_request_lines_go_through_logging_when_it_is_set_up_otherwise(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="nurture.http")

    async def one() -> None:
        logs.request("POST", "/webhooks/brevo", 401, 0.5)

    asyncio.run(one())
    [rec] = [r for r in caplog.records if getattr(r, "action", None) == "http.request"]
    assert (rec.method, rec.path, rec.status) == ("POST", "/webhooks/brevo", 401)  # type: ignore[attr-defined]
