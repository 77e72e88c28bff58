from __future__ import annotations

import orjson
import pytest

from nurture.errors import InvalidFields, MalformedPayload, PayloadTooLarge
from nurture.providers.track.inbound import TrackSource, parse_behavior

SRC = TrackSource(["whsec_x"], [], max_events=3)


def parse(payload: object) -> list:  # type: ignore[type-arg]
    return SRC.parse(orjson.dumps(payload), {})


def test_single_event_normalises_contact_and_keeps_data() -> None:
    [ev] = parse(
        {
            "id": "e1",
            "type": "page.viewed",
            "occurred_at": "2026-11-23T10:00:00+01:00",
            "contact": {"email": " Bob@Example.com", "first_name": "Bob", "external_id": 7},
            "data": {"url": "/"},
        }
    )
    assert ev.contact.email == "bob@example.com"
    assert ev.contact.identities == {"external_id": "7"}
    assert ev.contact.traits == {"first_name": "Bob"}
    assert ev.dedupe_key == "id:e1"
    assert ev.occurred_at.utcoffset().total_seconds() == 3600


def test_without_id_the_key_is_a_stable_content_hash() -> None:
    item = {"type": "link.clicked", "contact": {"email": "a@b.co"}, "data": {"u": 1}}
    assert parse(item)[0].dedupe_key == parse(item)[0].dedupe_key
    other = {**item, "data": {"u": 2}}
    assert parse(item)[0].dedupe_key != parse(other)[0].dedupe_key


def test_every_invalid_field_is_named() -> None:
    with pytest.raises(InvalidFields) as err:
        parse(
            [
                {"type": "Bad Type", "contact": {"email": "nope"}},
                {"type": "page.viewed", "contact": {}, "occurred_at": "2026-01-01T00:00:00"},
            ]
        )
    fields = {p.field for p in err.value.problems}
    assert fields == {"[0].type", "[0].contact.email", "[1].contact", "[1].occurred_at"}


def test_array_over_the_limit_and_malformed_json() -> None:
    item = {"type": "page.viewed", "contact": {"email": "a@b.co"}}
    with pytest.raises(PayloadTooLarge):
        parse([item] * 4)
    with pytest.raises(MalformedPayload):
        SRC.parse(b"{not json", {})
    with pytest.raises(InvalidFields):
        parse([])


@pytest.mark.parametrize(
    ("action", "expected"),
    [
        ("click", "link.clicked"),
        ("open", "email.opened"),
        ("purchase", "purchase.completed"),
        ("form_submit", "form.submitted"),
        ("page_view", "page.viewed"),
        ("Video Played!", "custom.video_played"),
    ],
)
def test_prototype_behavior_actions_map_to_canonical_types(action: str, expected: str) -> None:
    body = orjson.dumps({"client_code": "C042", "action": action, "metadata": {"amount": 10}})
    [ev] = parse_behavior(body)
    assert ev.type == expected
    assert ev.contact.identities == {"client_code": "C042"}
    assert ev.data["amount"] == 10


def test_behavior_requires_client_code_and_action() -> None:
    with pytest.raises(InvalidFields) as err:
        parse_behavior(b'{"metadata": []}')
    assert {p.field for p in err.value.problems} == {"client_code", "action", "metadata"}
