"""The ``consent:`` block of a form, and the signed link of the double opt-in."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from nurture.errors import Unauthenticated
from nurture.messaging.unsubscribe import confirm_url, make_token, read_token
from nurture.providers.forms.inbound import UNCONFIRMED, FormSource
from nurture.providers.forms.spec import FormSpec

FIELDS = {"email": {"type": "email", "required": True}, "news": {"type": "boolean"}}


def form(**consent: object) -> FormSpec:
    return FormSpec.model_validate({"id": "signup", "fields": FIELDS, "consent": consent})


def test_consent_fields_must_be_form_fields() -> None:
    with pytest.raises(ValidationError, match=r"consent\.fields names 'newsletter'"):
        form(text="I agree", fields=["newsletter"])
    with pytest.raises(ValidationError, match="text"):
        form(text="")


def test_a_submission_carries_what_was_agreed_and_from_where() -> None:
    source = FormSource(form(text="I agree", version="v2", fields=["news"]), ["whsec_x"])
    [event] = source.parse(b'{"email": "Ann@Example.com", "news": true}', {}, "203.0.113.9")
    assert event.type == "form.submitted"
    assert event.data["consent"] == {
        "text": "I agree",
        "version": "v2",
        "fields": {"news": True},
        "client_addr": "203.0.113.9",
        "double_opt_in": False,
    }


def test_double_opt_in_holds_the_form_event_back() -> None:
    source = FormSource(form(text="I agree", double_opt_in=True), ["whsec_x"])
    [event] = source.parse(b'{"email": "ann@example.com"}', {}, None)
    assert event.type == UNCONFIRMED
    assert event.data["consent"]["then"] == "form.submitted"
    assert event.data["consent"]["confirm_template"] == "confirm_subscription"


def test_confirm_and_unsubscribe_tokens_are_not_interchangeable() -> None:
    url = confirm_url("https://n.example/", "key", 42)
    token = url.rsplit("/", 1)[1]
    assert url == f"https://n.example/confirm/{token}"
    assert read_token("key", token, "confirm") == 42
    with pytest.raises(Unauthenticated, match="unsubscribe token signature"):
        read_token("key", token)
    with pytest.raises(Unauthenticated, match="confirm token signature"):
        read_token("key", make_token("key", 42), "confirm")
