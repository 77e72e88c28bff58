from __future__ import annotations

import re
from datetime import UTC, datetime

from nurture.web.console.charts import HEIGHT, bars
from nurture.web.console.overview import WINDOWS
from nurture.web.console.render import duration


def test_bars_scale_to_the_highest_value_and_escape_labels() -> None:
    svg = str(bars([0, 5, 10], ["a", "<b>", "c"], title='t "x"', kind="bad"))
    heights = [float(h) for h in re.findall(r'height="([\d.]+)"><title>', svg)]
    assert heights == [0.0, (HEIGHT - 2) / 2, HEIGHT - 2]
    assert "<title>&lt;b&gt;: 5</title>" in svg
    assert 'aria-label="t &quot;x&quot;: 15 in total over 3 periods, highest 10"' in svg
    assert 'class="chart chart-bad"' in svg
    assert "style=" not in svg and "<script" not in svg  # nothing the CSP would refuse


def test_all_zero_draws_an_empty_axis() -> None:
    svg = str(bars([0, 0], ["a", "b"], title="none"))
    assert re.findall(r'height="([\d.]+)"><title>', svg) == ["0.0", "0.0"]


def test_windows_end_with_the_period_holding_now() -> None:
    now = datetime(2026, 11, 23, 14, 37, tzinfo=UTC)
    day = WINDOWS["24h"].buckets(now)
    assert len(day) == 24
    assert day[-1] == datetime(2026, 11, 23, 14, tzinfo=UTC)
    assert day[0] == datetime(2026, 11, 22, 15, tzinfo=UTC)
    week = WINDOWS["7d"].buckets(now)
    assert len(week) == 28
    assert week[-1] == datetime(2026, 11, 23, 12, tzinfo=UTC)
    assert week[0] == datetime(2026, 11, 16, 18, tzinfo=UTC)


def test_durations_read_naturally() -> None:
    assert [duration(s) for s in (0.25, 5, 150, 7300, 200000)] == [
        "250 ms",
        "5 s",
        "2 min",
        "2 h",
        "2 d",
    ]
