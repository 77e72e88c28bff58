"""Small bar charts drawn on the server as inline SVG: no script, no style attribute (the CSP
allows neither inline), colours come from classes in console.css. Labels are escaped here."""

from __future__ import annotations

from collections.abc import Sequence
from html import escape

from markupsafe import Markup

WIDTH = 240
HEIGHT = 48


def bars(
    values: Sequence[float],
    labels: Sequence[str],
    *,
    title: str,
    kind: str = "default",
    unit: str = "",
) -> Markup:
    """One bar per value, the tallest filling the height; each bar's ``<title>`` says
    ``label: value``. ``kind`` picks the colour class (default, bad, warn, good)."""
    n = max(1, len(values))
    top = max([*values, 0]) or 1
    step = WIDTH / n
    gap = min(2.0, step * 0.2)
    parts = []
    for i, (value, label) in enumerate(zip(values, labels, strict=True)):
        h = 0.0 if value <= 0 else max(1.5, value / top * (HEIGHT - 2))
        x = i * step
        text = f"{label}: {value:g}{unit}"
        parts.append(
            f'<rect x="{x:.1f}" y="{HEIGHT - h:.1f}" width="{max(step - gap, 0.5):.1f}" '
            f'height="{h:.1f}"><title>{escape(text)}</title></rect>'
        )
    total = sum(values)
    summary = f"{title}: {total:g}{unit} in total over {len(values)} periods, highest {top:g}"
    return Markup(
        f'<svg class="chart chart-{escape(kind)}" viewBox="0 0 {WIDTH} {HEIGHT}" '
        f'preserveAspectRatio="none" role="img" aria-label="{escape(summary)}">'
        f'<line class="axis" x1="0" y1="{HEIGHT - 0.5}" x2="{WIDTH}" y2="{HEIGHT - 0.5}"/>'
        + "".join(parts)
        + "</svg>"
    )
