"""A funnel drawn on the server as inline SVG: one row per stage, its bar stacked by segment,
the count and the rate (of those enrolled) written after it. Like ``charts``: no script, no
style attribute (colours are the ``seg-N`` classes of console.css), every label escaped here.
"""

from __future__ import annotations

from collections.abc import Sequence
from html import escape

from markupsafe import Markup

from nurture.sequences.funnel import Stage, rate

WIDTH = 760
LABEL = 190  # the stage names' column
BAR = 420  # the longest bar (the enrolled row)
ROW = 30
BAR_HEIGHT = 20
LEGEND = 28
COLOURS = 6  # seg-0 .. seg-5, then they repeat


def draw(stages: Sequence[Stage], segments: Sequence[tuple[str, str]], *, title: str) -> Markup:
    """``segments`` is ``[(key, label)]`` in drawing order; each stage's counts are keyed alike.
    Bars scale to the first stage (everyone enrolled)."""
    base = stages[0].total if stages else 0
    scale = BAR / base if base else 0.0
    height = LEGEND + ROW * len(stages) + 6
    parts: list[str] = []
    # Legend: one swatch per segment.
    x = float(LABEL)
    for i, (_, label) in enumerate(segments):
        parts.append(
            f'<rect class="seg-{i % COLOURS}" x="{x:.1f}" y="6" width="12" height="12"/>'
            f'<text class="legend" x="{x + 16:.1f}" y="16">{escape(label)}</text>'
        )
        x += 30 + 7.5 * len(label)
    for row, stage in enumerate(stages):
        y = LEGEND + row * ROW
        mid = y + BAR_HEIGHT / 2 + 4
        parts.append(
            f'<text class="stage" x="{LABEL - 8}" y="{mid:.1f}" text-anchor="end">'
            f"{escape(stage.label)}</text>"
        )
        x = float(LABEL)
        for i, (key, label) in enumerate(segments):
            n = stage.counts.get(key, 0)
            if n <= 0:
                continue
            w = max(n * scale, 1.0)
            tip = f"{stage.label}, {label}: {n} ({rate(n, base)} of enrolled)"
            parts.append(
                f'<rect class="seg-{i % COLOURS}" x="{x:.1f}" y="{y}" width="{w:.1f}" '
                f'height="{BAR_HEIGHT}" data-segment="{escape(key)}" data-count="{n}">'
                f"<title>{escape(tip)}</title></rect>"
            )
            x += w
        parts.append(
            f'<text class="value" x="{x + 6:.1f}" y="{mid:.1f}" data-total="{stage.total}">'
            f"{stage.total} · {rate(stage.total, base)}</text>"
        )
    summary = f"{title}: " + ", ".join(
        f"{s.label} {s.total} ({rate(s.total, base)})" for s in stages
    )
    return Markup(
        f'<svg class="funnel" viewBox="0 0 {WIDTH} {height}" width="{WIDTH}" height="{height}" '
        f'role="img" aria-label="{escape(summary)}">' + "".join(parts) + "</svg>"
    )
