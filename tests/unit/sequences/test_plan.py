"""Planning of sequence steps (pure): offsets from the anchor, min_lead, skip-past, quiet hours in
the contact's time zone across DST, and the ``sequences:`` section's validation."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nurture.errors import ConfigError
from nurture.pack import load_pack
from nurture.sequences import StepTiming, Window, load_book, next_allowed, plan
from nurture.sequences.plan import parse_days, parse_hours, parse_offset

NOW = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)
PRECALL = [
    StepTiming("prep-guide", timedelta(hours=-72)),
    StepTiming("reminder", timedelta(hours=-24)),
    StepTiming("final", timedelta(hours=-2), exact=True),
]
CHRISTMAS = [StepTiming(f"email-{i + 1}", timedelta(hours=h)) for i, h in enumerate((0, 24, 72))]


def scheduled(hours_away: float) -> list[str]:
    steps = plan(
        PRECALL,
        anchor=NOW + timedelta(hours=hours_away),
        now=NOW,
        anchored_on_event=True,
        min_lead=timedelta(hours=2),
    )
    return [s.id for s in steps if s.scheduled]


@pytest.mark.parametrize(
    ("hours_away", "expected"),
    [
        (100, ["prep-guide", "reminder", "final"]),
        (72.5, ["prep-guide", "reminder", "final"]),
        (72, ["reminder", "final"]),  # strictly before: a reminder due right now is not sent
        (50, ["reminder", "final"]),
        (24, ["final"]),
        (2.5, ["final"]),
        (2, []),
        (1, []),
        (-5, []),
    ],
)
def test_precall_cases_of_the_prototype(hours_away: float, expected: list[str]) -> None:
    assert scheduled(hours_away) == expected


def test_min_lead_and_past_reasons() -> None:
    soon = plan(
        PRECALL,
        anchor=NOW + timedelta(hours=1),
        now=NOW,
        anchored_on_event=True,
        min_lead=timedelta(hours=2),
    )
    assert all(s.skip and s.skip.startswith("min_lead: the anchor is 1h away") for s in soon)
    later = plan(PRECALL, anchor=NOW + timedelta(hours=50), now=NOW, anchored_on_event=True)
    assert later[0].skip == "past: due 22h before enrolment"


def test_enrolment_anchored_steps_start_now_and_scale_with_the_time_scale() -> None:
    steps = plan(CHRISTMAS, anchor=NOW, now=NOW, anchored_on_event=False, time_scale=86_400)
    assert [s.due_at - NOW for s in steps] == [
        timedelta(0),
        timedelta(seconds=1),
        timedelta(seconds=3),
    ]
    assert all(s.scheduled for s in steps)


@given(
    offsets=st.lists(st.integers(-500, 500), min_size=1, max_size=8),
    lead=st.integers(-200, 200),
    min_lead=st.one_of(st.none(), st.integers(0, 10)),
)
def test_plan_invariants(offsets: list[int], lead: int, min_lead: int | None) -> None:
    timings = [StepTiming(f"s{i}", timedelta(hours=o)) for i, o in enumerate(offsets)]
    anchor = NOW + timedelta(hours=lead)
    out = plan(
        timings,
        anchor=anchor,
        now=NOW,
        anchored_on_event=True,
        min_lead=timedelta(hours=min_lead) if min_lead is not None else None,
    )
    assert [p.id for p in out] == [t.id for t in timings]
    for p, t in zip(out, timings, strict=True):
        assert p.due_at == anchor + t.offset
        if p.scheduled:  # never in the past, never inside min_lead
            assert p.due_at > NOW or (p.due_at == NOW and t.offset >= timedelta(0))
            assert min_lead is None or anchor - NOW >= timedelta(hours=min_lead)
        elif min_lead is None or anchor - NOW >= timedelta(hours=min_lead):
            assert p.due_at <= NOW


STEP = "\n      - {id: s, at: 1h, send_email: t}\n"
PARIS = ZoneInfo("Europe/Paris")
OFFICE = Window(time(8, 0), time(20, 0), parse_days("mon-fri"))


@pytest.mark.parametrize(
    ("when_local", "expected_local"),
    [
        # Friday 21:00 before the autumn change -> Monday 08:00, one hour later in UTC terms.
        (datetime(2026, 10, 23, 21, 0), datetime(2026, 10, 26, 8, 0)),
        # Saturday of the spring change -> Monday 08:00 CEST.
        (datetime(2026, 3, 28, 12, 0), datetime(2026, 3, 30, 8, 0)),
        (datetime(2026, 3, 30, 7, 59), datetime(2026, 3, 30, 8, 0)),
        (datetime(2026, 3, 30, 8, 0), datetime(2026, 3, 30, 8, 0)),
        (datetime(2026, 3, 30, 19, 59), datetime(2026, 3, 30, 19, 59)),
        (datetime(2026, 3, 30, 20, 0), datetime(2026, 3, 31, 8, 0)),
    ],
)
def test_quiet_hours_are_local_wall_clock_across_dst(
    when_local: datetime, expected_local: datetime
) -> None:
    when = when_local.replace(tzinfo=PARIS).astimezone(UTC)
    got = next_allowed(when, OFFICE, PARIS)
    assert got.astimezone(PARIS).replace(tzinfo=None) == expected_local


def test_window_postpones_except_exact_steps() -> None:
    # Anchor Friday 2026-10-23 23:00 Paris; -2h exact stays at 21:00, -24h (Thu 23:00) moves.
    anchor = datetime(2026, 10, 23, 23, 0, tzinfo=PARIS).astimezone(UTC)
    out = plan(
        PRECALL,
        anchor=anchor,
        now=NOW - timedelta(days=60),
        anchored_on_event=True,
        window=OFFICE,
        zone=PARIS,
    )
    local = {p.id: p.due_at.astimezone(PARIS).replace(tzinfo=None) for p in out}
    assert local["final"] == datetime(2026, 10, 23, 21, 0)
    assert local["reminder"] == datetime(2026, 10, 23, 8, 0)
    assert local["prep-guide"] == datetime(2026, 10, 21, 8, 0)


ZONES = ["Europe/Paris", "America/New_York", "Australia/Lord_Howe", "Asia/Kolkata", "UTC"]


@settings(max_examples=300)
@given(
    minutes=st.integers(0, 2 * 365 * 24 * 60),
    zone=st.sampled_from(ZONES),
    start=st.integers(0, 20),
    length=st.integers(2, 24),
    days=st.sets(st.integers(0, 6), min_size=1),
)
def test_next_allowed_is_the_earliest_time_inside_the_window(
    minutes: int, zone: str, start: int, length: int, days: set[int]
) -> None:
    end = min(start + length, 23)
    if end <= start:
        return
    window = Window(time(start), time(end, 59) if end == 23 else time(end), frozenset(days))
    tz = ZoneInfo(zone)
    when = datetime(2026, 1, 1, tzinfo=UTC) + timedelta(minutes=minutes)
    got = next_allowed(when, window, tz)
    assert got >= when
    assert window.allows(got.astimezone(tz))
    assert got - when < timedelta(days=8)
    if got > when:  # nothing earlier (checked at minute granularity just before) was allowed
        assert not window.allows((got - timedelta(minutes=1)).astimezone(tz))


def test_parsers() -> None:
    assert parse_offset("-72h") == timedelta(hours=-72)
    assert parse_offset("1d12h") == timedelta(hours=36)
    assert parse_offset(90) == timedelta(seconds=90)
    assert parse_days("fri-mon") == frozenset({4, 5, 6, 0})
    assert parse_days(["sat", "sun"]) == frozenset({5, 6})
    assert parse_hours("08:00-20:00") == (time(8), time(20))
    for bad in ("20:00-08:00", "8-", "noon-night"):
        with pytest.raises(ValueError):
            parse_hours(bad)
    with pytest.raises(ValueError):
        parse_days("someday")
    with pytest.raises(ValueError):
        parse_offset("soon")


def write_pack(tmp_path: Path, text: str) -> Path:
    (tmp_path / "sequences.yaml").write_text(text)
    return tmp_path


@pytest.mark.parametrize(
    ("yaml_text", "needle"),
    [
        (
            "sequences:\n  - id: a\n    steps:\n      - {id: s, at: -2h, send_email: t}\n",
            "sequences.yaml:2: 0: Value error, a step before the anchor",
        ),
        (
            "sequences:\n  - id: a\n    steps:\n      - {id: s, at: soon, send_email: t}\n",
            "sequences.yaml:4: 0.steps.0.at",
        ),
        (
            "sequences:\n  - id: a\n    steps:\n      - {id: s, at: 1h, send_email: '{{ x'}\n",
            "template name does not parse",
        ),
        (
            "sequences:\n  - id: a\n    if: 'event.data ==='\n    steps:" + STEP,
            "sequences.yaml:3: 0.if: CEL does not compile",
        ),
        (
            "sequences:\n  - id: a\n    window: {hours: '20:00-08:00'}\n    steps:" + STEP,
            "0.window.hours",
        ),
        (
            "sequences:\n  - id: a\n    key: contact\n    cancel_on: booking.cancelled\n    steps:"
            + STEP,
            "need a key: naming the booking",
        ),
        (
            "sequences:\n  - id: a\n    steps:" + STEP + "      - {id: s, at: 2h, send_email: t}\n",
            "step ids must be unique",
        ),
        (
            "sequences:\n  - id: a\n    reentry: sometimes\n    steps:" + STEP,
            "0.reentry",
        ),
    ],
)
def test_invalid_sequences_name_file_line_and_field(
    tmp_path: Path, yaml_text: str, needle: str
) -> None:
    with pytest.raises(ConfigError) as err:
        load_book(load_pack(write_pack(tmp_path, yaml_text)))
    assert needle in str(err.value)


def test_default_pack_is_the_spec() -> None:
    book = load_book(load_pack(None, cwd=Path("/nonexistent")))
    christmas, precall = book.sequences
    assert [s.spec.at / timedelta(hours=1) for s in christmas.steps] == [
        0,
        24,
        72,
        120,
        168,
        216,
        264,
    ]
    assert (
        christmas.steps[1].template is None and christmas.steps[0].template == "christmas_email_1"
    )
    assert christmas.spec.exit_on == [
        "email.unsubscribed",
        "email.complained",
        "booking.created",
        "purchase.completed",
    ]
    assert [s.spec.at / timedelta(hours=1) for s in precall.steps] == [-72, -24, -2]
    assert precall.spec.min_lead == timedelta(hours=2) and precall.steps[2].spec.exact
    assert precall.previous_key is not None
    assert precall.previous_key.source == "event.data.previous_booking_uid"
    assert christmas.window is None and precall.window is None
