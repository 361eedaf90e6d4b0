"""RESULTS.md: headline, table, details, machine and commands."""

from __future__ import annotations

import datetime
import os
import platform
import shlex
import subprocess
from collections.abc import Sequence
from pathlib import Path

from benchlib import COMMANDS, PYTHON, ROOT, Section
from chart import draw, panels
from config import Config


def _out(argv: Sequence[str]) -> str:
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
    except OSError as err:
        return f"({err})"
    return (proc.stdout or proc.stderr).strip()


def machine_lines() -> list[str]:
    lscpu = _out(["lscpu"])
    wanted = ("Architecture", "Model name", "CPU(s)", "Thread(s) per core", "Hypervisor vendor")
    cpu = [
        " ".join(line.split())
        for line in lscpu.splitlines()
        if line.split(":")[0].strip() in wanted
    ]
    versions = _out(
        [
            PYTHON,
            "-c",
            "import sys, importlib.metadata as m; print(sys.version.split()[0], *("
            "f'{p} {m.version(p)}' for p in ('cherrypy', 'cheroot', 'gunicorn', 'typer', "
            "'jinja2', 'cryptography', 'rich')), sep=', ')",
        ]
    )
    load1, load5, load15 = os.getloadavg()
    distro = _out(["sh", "-c", ". /etc/os-release; echo $PRETTY_NAME"])
    tools = [
        f"wrk: {_out(['sh', '-c', 'wrk -v 2>&1 | head -1'])}",
        f"hyperfine: {_out(['hyperfine', '--version'])}",
        f"uWSGI: {_out(['uwsgi', '--version'])}",
        _out(["openssl", "version"]),
    ]
    return [
        f"- lscpu: {'; '.join(cpu)}",
        f"- nproc: {_out(['nproc'])}, memory: {_out(['sh', '-c', 'free -h | sed -n 2p'])}",
        f"- kernel: {platform.release()} ({distro})",
        f"- python (.venv, Debian's /usr/bin/python3): {versions}",
        f"- {'; '.join(tools)}",
        f"- load average when the run ended: {load1:.2f} {load5:.2f} {load15:.2f} (a shared "
        "machine: other people's test suites run at the same time, hence rounds and spreads)",
    ]


def measured_tree() -> str:
    """Which cpsysd was measured: the checkout's commit (and whether cpsysd/ had local changes),
    or the tree named by PYTHONPATH."""
    commit = _out(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"])
    dirty = _out(["git", "-C", str(ROOT), "status", "--porcelain", "cpsysd"])
    tree = f"checkout at {commit}" + (" with uncommitted changes in cpsysd/" if dirty else "")
    if os.environ.get("PYTHONPATH"):
        tree += f"; cpsysd imported from PYTHONPATH={os.environ['PYTHONPATH']}"
        rev = Path(os.environ["PYTHONPATH"].split(":")[0]) / "REV"
        if rev.exists():
            tree += f" (an export of commit {rev.read_text().strip()})"
    return tree


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def write_results(
    path: Path,
    sections: Sequence[Section],
    cfg: Config,
    argv: Sequence[str],
    seconds: float,
    failed: Sequence[str],
) -> None:
    now = datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    lines = ["# cpsysd benchmarks", ""]
    lines += [
        f"Written by `{shlex.join(['bench/run.py', *argv]) if argv else 'just bench'}` "
        f"on {now} in {seconds:.0f} s: {cfg.reps} rounds of {cfg.duration:g} s wrk runs per "
        "load figure, medians over the rounds; ratios are medians of per-round ratios, each "
        "measured back to back with its comparison. Spread: lowest/highest round around the "
        "median. Regenerate with `just bench` (about 8 minutes; not part of CI). "
        f"cpsysd measured: {measured_tree()}.",
        "",
        "## Headline",
        "",
    ]
    lines += [f"- {item}" for section in sections for item in section.headline]
    if failed:
        lines += ["", f"Sections that failed in this run: {', '.join(failed)}."]
    charts = panels(sections)
    if charts:
        # Next to the results file, so the relative link works wherever -o puts it.
        path.with_suffix(".svg").write_text(draw(charts))
        lines += ["", f"![the side-by-side figures of this run]({path.with_suffix('.svg').name})"]
    lines += ["", "## Results", "", "| Section | Measure | Value | Ratio | Spread | Note |"]
    lines += ["|---|---|---|---|---|---|"]
    for section in sections:
        for row in section.rows:
            cells = (row.section, row.what, row.value, row.ratio, row.spread, row.note)
            lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    for section in sections:
        if section.details:
            lines += ["", f"## {section.title}", ""]
            for paragraph in section.details:
                lines += [paragraph, ""]
    lines += ["", "## Machine", "", *machine_lines(), "", "## Commands", ""]
    lines += [
        "Every distinct command line the run started (ports and temporary paths replaced by "
        "`$PORT`/`$TMP`; paths relative to the checkout):",
        "",
        "```",
        *COMMANDS.lines,
        "```",
        "",
    ]
    path.write_text("\n".join(lines))
