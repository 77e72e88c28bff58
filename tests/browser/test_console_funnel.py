"""The Sequences funnel in a real browser, on a server of its own (so the counts are only the
seeded ones): the SVG and the table show the same, right numbers."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from tests.browser.conftest import ADMIN, Server, keep_copy, login, shot
from tests.e2e.console.funnel_seed import EXPECTED, seed_funnel

pytestmark = pytest.mark.slow


def test_the_funnel_chart_draws_the_seeded_counts(
    page: Any, server: Server, tmp_path: Path
) -> None:
    seed_funnel(server.db, datetime.now(UTC))
    login(page, ADMIN)
    page.get_by_role("link", name="Sequences", exact=True).click()
    page.get_by_role("link", name="christmas-2025").click()
    chart = page.locator("svg.funnel")
    # Counted in the background: a page that says so reloads itself until it is done.
    chart.wait_for()
    totals = [
        int(t)
        for t in chart.locator("text.value").evaluate_all(
            "els => els.map(e => e.getAttribute('data-total'))"
        )
    ]
    stages = chart.locator("text.stage").evaluate_all("els => els.map(e => e.textContent)")
    drawn = dict(zip(stages, totals, strict=True))
    for stage, (total, critical, urgent, none) in EXPECTED.items():
        assert drawn[stage] == total, stage
        row = page.locator("#funnel-table tbody tr", has=page.locator(f"th:text-is('{stage}')"))
        cells = row.locator("td").all_inner_texts()
        assert int(cells[0]) == total
        # columns: all, rate, CRITICAL, URGENT, OPTIMIZE, no segment
        split = [int(c.split(" ")[0]) for c in cells[2:]]
        assert split == [critical, urgent, 0, none], stage
    # Every bar's own count adds up to its row's total.
    counts = chart.locator("rect[data-count]").evaluate_all(
        "els => els.map(e => Number(e.getAttribute('data-count')))"
    )
    assert sum(counts) == sum(total for total, *_ in EXPECTED.values())
    assert "Funnel of christmas-2025: enrolled 6 (100 %)" in (
        chart.get_attribute("aria-label") or ""
    )
    path = shot(page, tmp_path, "sequence-funnel")
    if os.environ.get("NURTURE_SCREENSHOTS_DIR"):
        keep_copy(path, Path(os.environ["NURTURE_SCREENSHOTS_DIR"]) / "console-sequences.png")
