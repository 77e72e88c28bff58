"""Pasted event JSON for a dry run: every problem is named against the ``event`` field."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from nurture.errors import InvalidFields
from nurture.rules.dryrun import event_from_text

NOW = datetime(2026, 12, 6, 9, 0, tzinfo=UTC)


def test_a_pasted_event_is_read() -> None:
    event = event_from_text('{"type": "email.clicked", "data": {"url": "x"}}', NOW)
    assert event["type"] == "email.clicked" and event["occurred_at"] == NOW


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{nope", "not JSON"),
        ("[1, 2]", "a JSON object"),
        ('{"data": {}}', "event.type: required"),
        ('{"type": "x", "data": []}', "event.data: must be an object"),
        ("x" * 30, "at most 25 characters"),
    ],
)
def test_bad_text_names_the_event_field(text: str, message: str) -> None:
    with pytest.raises(InvalidFields) as caught:
        event_from_text(text, NOW, limit=25)
    [problem] = caught.value.problems
    assert problem.field == "event" and message in problem.message
