"""CLI latency: wall time of ``cpsysd --help`` and ``cpsysd generate`` (hyperfine), and which
imports cost it (``python -X importtime``)."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import tempfile
from pathlib import Path

from benchlib import COMMANDS, HELLO_TOML, PYTHON, ROOT, VENV, Section
from config import Config

CPSYSD = str(VENV / "bin" / "cpsysd")
COMMANDS_TIMED = (
    ("cpsysd --help", [CPSYSD, "--help"], "goal < 150 ms"),
    ("cpsysd generate -c examples/hello/cpsysd.toml -o -",
     [CPSYSD, "generate", "-c", str(HELLO_TOML), "-o", "-"], "goal < 150 ms"),
    ("python -c pass", [PYTHON, "-c", "pass"], "the interpreter alone"),
    ("python -c 'import typer'", [PYTHON, "-c", "import typer"], "Typer alone"),
)  # fmt: skip
HEAVY = ("typer", "pydantic", "pydantic_core", "jinja2", "rich", "click", "cryptography")


def hyperfine(commands: list[list[str]], runs: int) -> list[dict[str, float]]:
    """Mean/median/stddev/min/max seconds per command, from hyperfine's JSON export."""
    with tempfile.NamedTemporaryFile(suffix=".json") as out:
        argv = ["hyperfine", "-N", "--warmup", "3", "--runs", str(runs), "--export-json"]
        argv += [out.name, *(shlex.join(c) for c in commands)]
        COMMANDS.add(argv)
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=600, cwd=ROOT)
        if proc.returncode != 0:
            raise RuntimeError(f"hyperfine failed: {proc.stderr.strip()[-2000:]}")
        data = json.loads(Path(out.name).read_text())
    return list(data["results"])


def heavy_imports(argv: list[str]) -> dict[str, float]:
    """Cumulative import time (ms) of the heavy top-level packages ``argv`` imports."""
    args = [PYTHON, "-X", "importtime", "-m", "cpsysd", *argv[1:]]
    COMMANDS.add(args)
    proc = subprocess.run(args, capture_output=True, text=True, timeout=60, cwd="/")
    found: dict[str, float] = {}
    for line in proc.stderr.splitlines():
        match = re.match(r"import time:\s+\d+ \|\s+(\d+) \|( *)(\S+)", line)
        if match and match.group(3) in HEAVY:
            name = match.group(3)
            found[name] = found.get(name, 0.0) + int(match.group(1)) / 1000
    return found


def run(cfg: Config) -> Section:
    section = Section("CLI latency")
    runs = 5 if cfg.quick else 20
    results = hyperfine([argv for _, argv, _ in COMMANDS_TIMED], runs)
    medians = {}
    for (name, argv, goal), result in zip(COMMANDS_TIMED, results, strict=True):
        medians[name] = result["median"]
        spread = f"{(result['min'] / result['median'] - 1) * 100:+.0f}/" + (
            f"{(result['max'] / result['median'] - 1) * 100:+.0f}%"
        )
        note = goal
        if argv[0] == CPSYSD:
            heavy = heavy_imports(argv)
            if heavy:
                note += "; imports " + ", ".join(f"{k} {v:.0f} ms" for k, v in heavy.items())
        section.row(f"wall time: {name}", f"{result['median'] * 1000:.0f} ms", "", spread, note)
    names = [name for name, _, _ in COMMANDS_TIMED]
    section.headline.append(
        f"CLI: `cpsysd --help` {medians[names[0]] * 1000:.0f} ms, `cpsysd generate` "
        f"{medians[names[1]] * 1000:.0f} ms (interpreter alone "
        f"{medians[names[2]] * 1000:.0f} ms, `import typer` {medians[names[3]] * 1000:.0f} ms)."
    )
    section.details.append(
        f"hyperfine -N, 3 warm-up runs, {runs} runs each, medians; spread is min/max around "
        "the median. The import times are cumulative (`-X importtime`) from one run: "
        "they overlap (typer imports click), and they are what lazy imports can save."
    )
    return section
