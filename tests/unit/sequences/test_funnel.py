"""The funnel's arithmetic from counts (no database) and the segmentation a sequence routes on."""

from __future__ import annotations

from nurture.pack import DEFAULTS_DIR
from nurture.sequences import load
from nurture.sequences.funnel import Counts, build, rate, routing_segmentation


def test_the_default_sequences_route_on_their_segmentation() -> None:
    book = load(DEFAULTS_DIR)
    christmas = book.get("christmas-2025")
    precall = book.get("pre-call")
    assert christmas is not None and precall is not None
    assert routing_segmentation(christmas) == "assessment"
    assert routing_segmentation(precall) is None


def test_stages_split_by_segment_with_rates() -> None:
    seq = load(DEFAULTS_DIR).get("christmas-2025")
    assert seq is not None
    counts = Counts(
        enrollments=[
            ("CRITICAL", "active", "", 2),
            ("CRITICAL", "exited", "event booking.created", 1),
            ("URGENT", "exited", "event email.unsubscribed", 1),
            ("Odd", "completed", "every step ran or was skipped", 1),
            ("", "active", "", 1),
        ],
        steps=[("CRITICAL", "email-1", "sent", 3), ("URGENT", "email-1", "sent", 1)],
        engagement=[("CRITICAL", 2, 1)],
    )
    f = build(seq, counts, ["CRITICAL", "URGENT", "OPTIMIZE"])
    assert f["segments"] == [
        ("CRITICAL", "CRITICAL"),
        ("URGENT", "URGENT"),
        ("OPTIMIZE", "OPTIMIZE"),
        ("Odd", "Odd"),
        ("", "no segment"),
    ]
    rows = {r["label"]: r for r in f["table"]}
    assert rows["enrolled"]["total"] == 6
    assert rows["email-1 sent"]["total"] == 4 and rows["email-1 sent"]["rate"] == "67 %"
    assert rows["email-1 sent"]["cells"][0] == (3, "100 %")
    assert rows["opened"]["total"] == 2 and rows["clicked"]["total"] == 1
    assert rows["booked / purchased"]["total"] == 1
    assert rows["exited"]["cells"][1] == (1, "100 %")
    assert rows["email-7 sent"]["total"] == 0
    assert rate(1, 0) == "-"
