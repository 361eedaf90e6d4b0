"""The chart bench/report.py writes beside RESULTS.md (bench/chart.py): a well-formed SVG whose
bars are proportional to the figures, with ratio rows of the table picked up and a parity line
at 1.0x. Figures are made up here; no timing is measured or asserted."""

from __future__ import annotations

import sys
import xml.etree.ElementTree as ET
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "bench"
sys.path.append(str(BENCH))  # last: bench/ module names must not shadow others

from benchlib import Chart, Section  # noqa: E402
from chart import LABEL_W, draw, panels  # noqa: E402

SVG = "{http://www.w3.org/2000/svg}"


def _section() -> Section:
    section = Section("Scaling")
    section.row("req/s a / b", "", "1.50x", "+1/-2%")
    section.row("req/s c / d", "", "0.75x")
    section.row("longest wait", "200 ms", "p99 0.86x steady")  # not a plain ratio
    section.charts.append(Chart("Memory <PSS>", "MiB", (("idle", 0.0), ("on", 40.0))))
    return section


def test_ratio_rows_and_explicit_panels_are_drawn() -> None:
    charts = panels([_section()])
    assert [chart.title for chart in charts] == ["Scaling: ratios", "Memory <PSS>"]
    assert charts[0].bars == (("req/s a / b", 1.5), ("req/s c / d", 0.75))


def test_bars_are_proportional_and_labels_escaped() -> None:
    text = draw(panels([_section()]))
    root = ET.fromstring(text)  # well-formed despite the "<" in a title
    bars = [
        float(rect.attrib["width"])
        for rect in root.iter(f"{SVG}rect")
        if rect.attrib.get("x") == str(LABEL_W)
    ]
    assert len(bars) == 4
    assert bars[0] == 2 * bars[1]  # 1.50x against 0.75x
    assert bars[2] == 0  # 0 MiB idle draws no bar
    assert bars[3] > 0
    lines = list(root.iter(f"{SVG}line"))
    assert len(lines) == 1  # the parity line of the ratio panel only
    assert abs(float(lines[0].attrib["x1"]) - (LABEL_W + bars[0] / 1.5)) < 0.1
    labels = [node.text for node in root.iter(f"{SVG}text")]
    assert {"Memory <PSS>", "0.75x", "40.0 MiB"} <= set(labels)
