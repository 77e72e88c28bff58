"""The Sequences, Rules and Templates pages in process (SQLite and PostgreSQL)."""

from __future__ import annotations

import re

from starlette.testclient import TestClient

from nurture.testing import Harness
from tests.e2e.console.funnel_seed import EXPECTED, seed_funnel


def _cells(html: str, stage: str) -> list[int]:
    row = re.search(rf'<tr><th scope="row">{re.escape(stage)}</th>(.*?)</tr>', html, re.S)
    assert row, stage
    numbers = re.findall(r'<td class="num">([\d\u202f]+)', row.group(1))
    return [int(n.replace("\u202f", "")) for n in numbers]


def test_the_funnel_counts_each_stage_by_segment(h: Harness, as_viewer: TestClient) -> None:
    seed_funnel(h.container.db, h.clock.now())
    listing = as_viewer.get("/console/sequences")
    assert 'href="/console/sequences/christmas-2025"' in listing.text
    page = as_viewer.get("/console/sequences/christmas-2025")
    assert page.status_code == 200
    html = page.text
    assert "split by segment <code>assessment</code>" in html
    for stage, (total, critical, urgent, none) in EXPECTED.items():
        cells = _cells(html, stage)
        # all, then CRITICAL, URGENT, OPTIMIZE, no segment
        assert cells[0] == total, stage
        assert cells[2:] == [critical, urgent, 0, none], stage
        assert f'data-total="{total}"' in html
    assert 'aria-label="Funnel of christmas-2025: enrolled 6 (100 %)' in html
    svg = html[html.index("<svg") : html.index("</svg>")]
    assert "<script" not in svg and "style=" not in svg


def test_an_unknown_sequence_is_a_404_page(h: Harness, as_viewer: TestClient) -> None:
    r = as_viewer.get("/console/sequences/nope")
    assert r.status_code == 404 and "no sequence" in r.text
