"""Cold start under socket activation: from the first connection to the first response byte,
``cpsysd serve`` vs plain CherryPy started the same way (systemd-socket-activate starts the
server when the first client connects), with and without bytecode caches, and where the time
goes (``python -X importtime``)."""

from __future__ import annotations

import collections
import re
import socket
import tempfile
import time
from pathlib import Path

from benchlib import PYTHON, Procs, Samples, Section, free_port, ratio_samples, say, wait_listening
from config import Config
from servers import CPSYSD_SERVE, PLAIN_CHERRYPY, activate_argv

REQUEST = b"GET / HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n"


def first_byte_seconds(
    procs: Procs, argv: list[str], env: dict[str, str] | None = None, log: Path | None = None
) -> float:
    """Start ``argv`` under systemd-socket-activate, connect once it listens, and return the
    seconds from connect() to the first response byte."""
    port = free_port()
    proc = procs.start(activate_argv(port, argv, env), log=log)
    try:
        wait_listening(port)
        start = time.perf_counter()
        with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
            sock.sendall(REQUEST)
            first = sock.recv(1)
            elapsed = time.perf_counter() - start
            if not first:
                raise RuntimeError(f"{argv}: connection closed without a response")
        return elapsed
    finally:
        procs.stop(proc)


def no_cache_env(empty: str) -> dict[str, str]:
    """Every module compiled from source at each start, nothing written: what a service under
    ProtectSystem=strict sees when nothing was precompiled (the caches go to an empty prefix)."""
    return {"PYTHONPYCACHEPREFIX": empty, "PYTHONDONTWRITEBYTECODE": "1"}


def importtime_by_package(log: Path) -> dict[str, int]:
    """Self import time (us) per top-level package from a ``-X importtime`` log."""
    totals: collections.Counter[str] = collections.Counter()
    for line in log.read_text(errors="replace").splitlines():
        match = re.match(r"import time:\s+(\d+) \|\s+(\d+) \|(\s*)(\S+)", line)
        if match:
            totals[match.group(4).split(".")[0]] += int(match.group(1))
    return dict(totals)


def run(cfg: Config) -> Section:
    section = Section("Cold start")
    variants: dict[str, Samples] = collections.defaultdict(Samples)
    with tempfile.TemporaryDirectory(prefix="cpsysd-bench-") as tmp, Procs() as procs:
        nocache = no_cache_env(str(Path(tmp) / "pycache"))
        contenders = (
            ("cpsysd serve", CPSYSD_SERVE, None),
            ("cherrypy.quickstart", PLAIN_CHERRYPY, None),
            ("cpsysd serve, no bytecode caches", CPSYSD_SERVE, nocache),
            ("cherrypy.quickstart, no bytecode caches", PLAIN_CHERRYPY, nocache),
            ("python -c pass (interpreter only)", [PYTHON, "-c", "pass"], None),
        )
        for run_index in range(cfg.cold_runs):
            for name, argv, env in contenders:
                if argv[-1] == "pass":
                    start = time.perf_counter()
                    proc = procs.start(argv)
                    proc.wait(30)
                    variants[name].add(time.perf_counter() - start)
                    continue
                variants[name].add(first_byte_seconds(procs, argv, env))
            say(f"   cold start round {run_index + 1}/{cfg.cold_runs} done")
        logs = {}
        for name, argv in (("cpsysd serve", CPSYSD_SERVE), ("quickstart", PLAIN_CHERRYPY)):
            logs[name] = Path(tmp) / f"{name}.importtime"
            first_byte_seconds(procs, [argv[0], "-X", "importtime", *argv[1:]], log=logs[name])
        breakdown = {name: importtime_by_package(log) for name, log in logs.items()}
    for name, samples in variants.items():
        section.row(
            f"{name}: connect to first byte" if "pass" not in name else name,
            f"{samples.median * 1000:.0f} ms",
            "",
            samples.spread(),
        )
    pairs = (
        ("cpsysd serve", "cherrypy.quickstart", "goal <= 1.10"),
        ("cpsysd serve, no bytecode caches", "cherrypy.quickstart, no bytecode caches", ""),
        ("cpsysd serve, no bytecode caches", "cpsysd serve", "what precompiling saves"),
    )
    for num, den, goal in pairs:
        ratio = ratio_samples(variants[num], variants[den])
        section.row(f"{num} / {den}", "", f"{ratio.median:.2f}x", ratio.spread(), goal)
    shim = ratio_samples(variants["cpsysd serve"], variants["cherrypy.quickstart"]).median
    uncached = ratio_samples(
        variants["cpsysd serve, no bytecode caches"], variants["cpsysd serve"]
    ).median
    section.headline.append(
        f"Cold start under socket activation (first connection to first byte): "
        f"`cpsysd serve` {variants['cpsysd serve'].median * 1000:.0f} ms vs plain CherryPy "
        f"{variants['cherrypy.quickstart'].median * 1000:.0f} ms (**{(shim - 1) * 100:+.0f}%**); "
        f"without bytecode caches (ProtectSystem=strict, nothing precompiled) "
        f"**{uncached:.1f}x** slower."
    )
    section.details.append(_breakdown_table(breakdown))
    section.details.append(
        "Each round starts every server once under `systemd-socket-activate -l "
        "127.0.0.1:PORT`, waits until the port listens (read from /proc/net/tcp, not by "
        "connecting), then connects and sends `GET /`: the time is connect() to the first "
        "response byte, so it holds the interpreter start, all imports, the app's set-up and "
        'the first request. "No bytecode caches" sets PYTHONPYCACHEPREFIX to an empty '
        "directory and PYTHONDONTWRITEBYTECODE=1: every module is compiled from source at "
        "every start and nothing is written, which is what a DynamicUser service under "
        "ProtectSystem=strict gets when the install did not precompile (it cannot write "
        "`__pycache__` next to the sources). The table below is the self import time of "
        "`python -X importtime` summed per top-level package, from one cold start of each."
    )
    return section


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
