"""The chart of RESULTS.md: an SVG drawn here (no plotting library: the bench adds no
dependency, and Debian's python3-matplotlib is not installed on these machines).

Panels come from two places: each section's explicit :class:`~benchlib.Chart` panels (the
production shape's req/s, the idle memory, the longest wait during a deploy), and every table
row whose ratio reads ``N.NNx`` (throughput, scaling, ...), one ratio panel per section, with a
line at 1.0x.
"""

from __future__ import annotations

import html
import math
import re
from collections.abc import Sequence

from benchlib import Chart, Section

WIDTH = 860
LABEL_W = 400  # label column; bars from there to WIDTH - VALUE_W
VALUE_W = 110
BAR_H, GAP, TITLE_H = 16, 6, 30
COLOURS = ("#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2", "#edc948")
_RATIO = re.compile(r"(\d+(?:\.\d+)?)x")


def ratio_chart(section: Section) -> Chart | None:
    """The rows of ``section`` whose ratio is a plain ``N.NNx``, as one panel."""
    bars = tuple(
        (row.what, float(match.group(1)))
        for row in section.rows
        if (match := _RATIO.fullmatch(row.ratio.strip()))
    )
    return Chart(f"{section.title}: ratios", "x", bars) if bars else None


def panels(sections: Sequence[Section]) -> list[Chart]:
    out: list[Chart] = []
    for section in sections:
        ratio = ratio_chart(section)
        out += ([ratio] if ratio else []) + section.charts
    return [panel for panel in out if panel.bars]


def _label(text: str, limit: int = 58) -> str:
    return html.escape(text if len(text) <= limit else text[: limit - 1] + "\u2026")


def _value(value: float, unit: str) -> str:
    if unit == "x":
        return f"{value:.2f}x"
    return f"{value:,.0f} {unit}" if value >= 100 else f"{value:.1f} {unit}"


def draw(charts: Sequence[Chart]) -> str:
    """An SVG document with one horizontal bar panel per chart."""
    body: list[str] = []
    y = 10
    span = WIDTH - LABEL_W - VALUE_W
    for index, chart in enumerate(charts):
        values = [v for _, v in chart.bars if math.isfinite(v)]
        top = max([*values, 1.0 if chart.unit == "x" else 0.0]) or 1.0
        body.append(
            f'<text x="10" y="{y + 18}" font-weight="bold">{_label(chart.title, 100)}</text>'
        )
        y += TITLE_H
        first = y
        colour = COLOURS[index % len(COLOURS)]
        for label, value in chart.bars:
            width = span * value / top if math.isfinite(value) and value > 0 else 0
            body.append(
                f'<text x="{LABEL_W - 8}" y="{y + 12}" text-anchor="end">{_label(label)}</text>'
            )
            body.append(
                f'<rect x="{LABEL_W}" y="{y}" width="{width:.1f}" height="{BAR_H}" '
                f'fill="{colour}"/>'
            )
            shown = _value(value, chart.unit) if math.isfinite(value) else "n/a"
            body.append(f'<text x="{LABEL_W + width + 6:.1f}" y="{y + 12}">{shown}</text>')
            y += BAR_H + GAP
        if chart.unit == "x":  # parity line
            x = LABEL_W + span / top
            body.append(
                f'<line x1="{x:.1f}" y1="{first - 4}" x2="{x:.1f}" y2="{y}" stroke="#333" '
                'stroke-dasharray="4 3"/>'
            )
        y += 10
    return "\n".join(
        [
            f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{y + 10}" '
            f'viewBox="0 0 {WIDTH} {y + 10}" font-family="sans-serif" font-size="12">',
            f'<rect width="{WIDTH}" height="{y + 10}" fill="white"/>',
            *body,
            "</svg>",
            "",
        ]
    )
