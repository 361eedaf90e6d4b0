"""Cold start under socket activation: from the first connection to the first response byte,
``cpsysd serve`` vs plain CherryPy started the same way (systemd-socket-activate starts the
server when the first client connects), with and without bytecode caches; a ``kind = "wsgi"``
app (``apps/wsgi_plain.py``, which imports nothing) under ``cpsysd serve`` vs gunicorn sync -w 1
(also socket-activated: gunicorn adopts LISTEN_FDS); and where the time goes
(``python -X importtime``: per package, and per cpsysd module)."""

from __future__ import annotations

import collections
import contextlib
import os
import re
import socket
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from benchlib import (
    PYTHON,
    VENV,
    Procs,
    Samples,
    Section,
    free_port,
    pids_of_tree,
    ratio_samples,
    say,
    wait_listening,
)
from config import Config
from servers import APPS, CPSYSD_SERVE, PLAIN_CHERRYPY, activate_argv

# The same import-free WSGI app for both: what the servers cost, not the framework.
CPSYSD_WSGI = [*CPSYSD_SERVE[:-1], str(APPS / "wsgi_plain.toml")]
GUNICORN_SYNC_1 = [
    str(VENV / "bin" / "gunicorn"), "-w", "1", "-k", "sync", "--no-control-socket",
    "--chdir", str(APPS), "--log-level", "warning", "wsgi_plain:application",
]  # fmt: skip

REQUEST = b"GET / HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n"


def first_byte(
    procs: Procs, argv: list[str], env: dict[str, str] | None = None, log: Path | None = None
) -> tuple[float, float]:
    """Start ``argv`` under systemd-socket-activate, connect once it listens, and return the
    seconds from connect() to the first response byte, and the CPU seconds the server's
    processes had used by then (:func:`cpu_of_tree`)."""
    port = free_port()
    proc = procs.start(activate_argv(port, argv, env), log=log)
    try:
        wait_listening(port)
        start = time.perf_counter()
        with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
            sock.sendall(REQUEST)
            first = sock.recv(1)
            elapsed = time.perf_counter() - start
            cpu = cpu_of_tree(proc.pid)
            if not first:
                raise RuntimeError(f"{argv}: connection closed without a response")
        return elapsed, cpu
    finally:
        procs.stop(proc)


def cpu_of_tree(pid: int) -> float:
    """CPU seconds used by every thread of ``pid`` and its descendants, from the nanosecond
    run times of /proc/PID/task/TID/schedstat (proc(5)): on a machine shared with other
    work, the CPU a start needs is far steadier than its wall time, and exact where
    /proc/PID/stat counts clock ticks of 10 ms. (Threads that already exited are missed;
    the servers here keep theirs.)"""
    total = 0
    for member in pids_of_tree(pid):
        with contextlib.suppress(OSError):
            for task in os.listdir(f"/proc/{member}/task"):
                with (
                    contextlib.suppress(OSError),
                    open(f"/proc/{member}/task/{task}/schedstat") as f,
                ):
                    total += int(f.read().split()[0])
    return total / 1e9


def no_cache_env(empty: str) -> dict[str, str]:
    """Every module compiled from source at each start, nothing written: what a service under
    ProtectSystem=strict sees when nothing was precompiled (the caches go to an empty prefix)."""
    return {"PYTHONPYCACHEPREFIX": empty, "PYTHONDONTWRITEBYTECODE": "1"}


def importtime_by_package(log: Path) -> dict[str, int]:
    """Self import time (us) per top-level package from a ``-X importtime`` log."""
    totals: collections.Counter[str] = collections.Counter()
    for module, self_us in _importtime_entries(log):
        totals[module.split(".")[0]] += self_us
    return dict(totals)


def importtime_of_cpsysd(log: Path) -> dict[str, int]:
    """Self import time (us) of each cpsysd module from a ``-X importtime`` log."""
    return {
        module: self_us
        for module, self_us in _importtime_entries(log)
        if module == "cpsysd" or module.startswith("cpsysd.")
    }


def _importtime_entries(log: Path) -> list[tuple[str, int]]:
    entries = []
    for line in log.read_text(errors="replace").splitlines():
        match = re.match(r"import time:\s+(\d+) \|\s+(\d+) \|(\s*)(\S+)", line)
        if match:
            entries.append((match.group(4), int(match.group(1))))
    return entries


CONTENDERS = (
    ("cpsysd serve", CPSYSD_SERVE, False),
    ("cherrypy.quickstart", PLAIN_CHERRYPY, False),
    ("cpsysd serve, kind = wsgi", CPSYSD_WSGI, False),
    ("gunicorn sync -w 1", GUNICORN_SYNC_1, False),
    ("cpsysd serve, no bytecode caches", CPSYSD_SERVE, True),
    ("cherrypy.quickstart, no bytecode caches", PLAIN_CHERRYPY, True),
    ("python -c pass (interpreter only)", [PYTHON, "-c", "pass"], False),
)
PAIRS = (
    ("cpsysd serve", "cherrypy.quickstart", "goal <= 1.0"),
    ("cpsysd serve, kind = wsgi", "gunicorn sync -w 1", "goal <= 1.0; the same WSGI app"),
    ("cpsysd serve, kind = wsgi", "cpsysd serve", "what skipping CherryPy saves"),
    ("cpsysd serve, no bytecode caches", "cherrypy.quickstart, no bytecode caches", ""),
    ("cpsysd serve, no bytecode caches", "cpsysd serve", "what precompiling saves"),
)
CPU_SHOWN = (
    "cpsysd serve",
    "cherrypy.quickstart",
    "cpsysd serve, kind = wsgi",
    "gunicorn sync -w 1",
)
IMPORTTIME_RUNS = 5  # -X importtime starts of each; the tables show per-module medians
IMPORTTIME = (
    ("cpsysd serve", CPSYSD_SERVE),
    ("quickstart", PLAIN_CHERRYPY),
    ("cpsysd serve, kind = wsgi", CPSYSD_WSGI),
)


def _measure(
    cfg: Config, procs: Procs, nocache: dict[str, str]
) -> tuple[dict[str, Samples], dict[str, Samples]]:
    """``cfg.cold_runs`` rounds; each starts every contender once, in an order rotated from
    round to round, so each ratio compares starts made back to back. Returns the wall times
    and the CPU times to the first byte."""
    variants: dict[str, Samples] = collections.defaultdict(Samples)
    cpu_times: dict[str, Samples] = collections.defaultdict(Samples)
    for run_index in range(cfg.cold_runs):
        shift = run_index % len(CONTENDERS)
        for name, argv, uncached in CONTENDERS[shift:] + CONTENDERS[:shift]:
            if argv[-1] == "pass":
                start = time.perf_counter()
                procs.start(argv).wait(30)
                variants[name].add(time.perf_counter() - start)
                continue
            wall, cpu = first_byte(procs, argv, nocache if uncached else None)
            variants[name].add(wall)
            cpu_times[name].add(cpu)
        say(f"   cold start round {run_index + 1}/{cfg.cold_runs} done")
    return variants, cpu_times


def run(cfg: Config) -> Section:
    section = Section("Cold start")
    with tempfile.TemporaryDirectory(prefix="cpsysd-bench-") as tmp, Procs() as procs:
        variants, cpu_times = _measure(cfg, procs, no_cache_env(str(Path(tmp) / "pycache")))
        logs: dict[str, list[Path]] = collections.defaultdict(list)
        for run_index in range(IMPORTTIME_RUNS):
            for name, argv in IMPORTTIME:
                logs[name].append(Path(tmp) / f"{name}.{run_index}.importtime")
                first_byte(procs, [argv[0], "-X", "importtime", *argv[1:]], log=logs[name][-1])
        breakdown = {name: _median_of(importtime_by_package, runs) for name, runs in logs.items()}
        own = {
            name: _median_of(importtime_of_cpsysd, runs)
            for name, runs in logs.items()
            if "cpsysd" in name
        }
    for name, samples in variants.items():
        section.row(
            f"{name}: connect to first byte" if "pass" not in name else name,
            f"{samples.median * 1000:.0f} ms",
            "",
            samples.spread(),
        )
    for name, samples in cpu_times.items():
        if name in CPU_SHOWN:
            section.row(
                f"{name}: CPU to first byte",
                f"{samples.median * 1000:.0f} ms",
                "",
                samples.spread(),
            )
    for num, den, goal in PAIRS[:2]:
        ratio = ratio_samples(cpu_times[num], cpu_times[den])
        section.row(f"CPU: {num} / {den}", "", f"{ratio.median:.2f}x", ratio.spread(), goal)
    ratios = {}
    for num, den, goal in PAIRS:
        ratios[num, den] = ratio = ratio_samples(variants[num], variants[den])
        section.row(f"{num} / {den}", "", f"{ratio.median:.2f}x", ratio.spread(), goal)
    shim = ratios["cpsysd serve", "cherrypy.quickstart"].median
    wsgi = ratios["cpsysd serve, kind = wsgi", "gunicorn sync -w 1"].median
    uncached = ratios["cpsysd serve, no bytecode caches", "cpsysd serve"].median
    ms = {name: f"{samples.median * 1000:.0f} ms" for name, samples in variants.items()}
    section.headline.append(
        f"Cold start under socket activation (first connection to first byte): "
        f"`cpsysd serve` {ms['cpsysd serve']} vs plain CherryPy {ms['cherrypy.quickstart']} "
        f'(**{shim:.2f}x**, goal <= 1.0); a `kind = "wsgi"` app {ms["cpsysd serve, kind = wsgi"]}'
        f" vs gunicorn sync -w 1 {ms['gunicorn sync -w 1']} (**{wsgi:.2f}x**, goal <= 1.0); "
        f"without bytecode caches (ProtectSystem=strict, nothing precompiled) "
        f"**{uncached:.1f}x** slower."
    )
    section.details.append(_breakdown_table(breakdown))
    section.details.append(_own_modules_table(own))
    section.details.append(
        "Each round starts every server once under `systemd-socket-activate -l "
        "127.0.0.1:PORT`, in an order rotated from round to round, waits until the port "
        "listens (read from /proc/net/tcp, not by connecting), then connects and sends `GET /`: "
        "the time is connect() to the first response byte, so it holds the interpreter start, "
        'all imports, the app\'s set-up and the first request. The `kind = "wsgi"` app '
        "(`apps/wsgi_plain.py`, described by `apps/wsgi_plain.toml`) imports nothing, so "
        "against gunicorn (sync, one worker, which adopts the passed socket; its master forks "
        'the worker that imports the app) it compares the servers alone. "No bytecode '
        'caches" sets PYTHONPYCACHEPREFIX to an empty directory and PYTHONDONTWRITEBYTECODE=1: '
        "every module is compiled from source at every start and nothing is written, which is "
        "what a DynamicUser service under ProtectSystem=strict gets when the install did not "
        'precompile (it cannot write `__pycache__` next to the sources). "CPU to first '
        "byte\" is the CPU time every thread of the server's processes had used when the "
        "first byte arrived (/proc/PID/task/*/schedstat): on a shared machine far steadier "
        "than the wall time. The tables are the self import time of `python -X importtime`, "
        "per module the median of five cold starts of each (importtime itself inflates "
        "import times: compare the columns, not with the wall times above), summed per "
        "top-level package, then per cpsysd module."
    )
    return section


def _median_of(parse: Callable[[Path], dict[str, int]], logs: list[Path]) -> dict[str, int]:
    """Per-key median over the runs (a module missing from a run counts as 0 there)."""
    parsed = [parse(log) for log in logs]
    keys = set().union(*parsed)
    return {key: int(statistics.median(run.get(key, 0) for run in parsed)) for key in keys}


def _own_modules_table(own: dict[str, dict[str, int]]) -> str:
    names = list(own)
    modules = collections.Counter[str]()
    for totals in own.values():
        modules.update(totals)
    lines = ["| cpsysd module (self import time, ms) | " + " | ".join(names) + " |"]
    lines.append("|---" * (len(names) + 1) + "|")
    for module, _ in modules.most_common():
        cells = [f"{own[n][module] / 1000:.1f}" if module in own[n] else "-" for n in names]
        lines.append(f"| {module} | " + " | ".join(cells) + " |")
    sums = [f"**{sum(own[n].values()) / 1000:.1f}**" for n in names]
    lines.append("| **all cpsysd modules** | " + " | ".join(sums) + " |")
    return "\n".join(lines)


def _breakdown_table(breakdown: dict[str, dict[str, int]]) -> str:
    names = list(breakdown)
    packages = collections.Counter[str]()
    for totals in breakdown.values():
        packages.update(totals)
    lines = ["| package (self import time, ms) | " + " | ".join(names) + " |"]
    lines.append("|---" * (len(names) + 1) + "|")
    for package, _ in packages.most_common(14):
        cells = [f"{breakdown[n].get(package, 0) / 1000:.1f}" for n in names]
        lines.append(f"| {package} | " + " | ".join(cells) + " |")
    sums = [f"**{sum(breakdown[n].values()) / 1000:.1f}**" for n in names]
    lines.append("| **all imports** | " + " | ".join(sums) + " |")
    return "\n".join(lines)
