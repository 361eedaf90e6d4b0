"""Where a request's time goes in ``cpsysd serve`` (cheroot + CherryPy): py-spy samples the
threads holding the GIL under wrk load; each sample is charged to a component by the innermost
frame that belongs to one. With the server's CPU time per request (/proc) this gives
microseconds per request per component."""

from __future__ import annotations

import collections
import os
import signal
import subprocess
import tempfile
import time
from pathlib import Path

from benchlib import HELLO_DIR, PYTHON, VENV, Procs, Section, free_port, load, say, wait_http
from config import Config

# (component, substrings of "function (file:line)" frames), checked from the innermost frame out
COMPONENTS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("the app's handler (hello.py)", ("hello.py",)),
    ("access log (cpsysd journal.py)", ("cpsysd/runtime/journal.py", "_cplogging.py")),
    ("socket send/recv syscalls", ("(socket.py", "makefile.py", "_pyio.py")),
    ("HTTP parsing (cheroot read_request_*)", ("read_request_line", "read_request_headers",
                                               "parse_request", "read_headers")),
    ("response headers + write (cheroot)", ("send_headers", "ensure_headers_sent",
                                            "cheroot/wsgi.py")),
    ("CherryPy request: dispatch, tools, config, response",
     ("cherrypy/_cprequest.py", "cherrypy/_cpdispatch.py", "cherrypy/_cptools.py",
      "cherrypy/lib/", "cherrypy/_cpwsgi.py", "cherrypy/_cptree.py", "cherrypy/_cpconfig.py",
      "cherrypy/_helper.py", "cherrypy/__init__.py", "cherrypy/_cpreqbody.py",
      "cherrypy/process/wspbus.py", "httputil.py")),
    ("keep-alive hand-off: selector, queue, worker threads",
     ("cheroot/connections.py", "cheroot/workers/", "selectors.py", "queue.py",
      "threading.py")),
    ("other cheroot per-connection code", ("cheroot/",)),
)  # fmt: skip
OTHER = "other (interpreter, stdlib)"


def description(tmp: Path, port: int) -> Path:
    path = tmp / "hello.toml"
    path.write_text(
        f'name = "hello"\nentry = "hello:Root"\nworking_directory = "{HELLO_DIR}"\n'
        f'config = "{HELLO_DIR / "app.conf"}"\nlisten = ["127.0.0.1:{port}"]\n'
    )
    return path


def classify(frames: list[str]) -> tuple[str, str]:
    """(component, innermost frame of that component)."""
    for frame in reversed(frames):
        for component, needles in COMPONENTS:
            if any(needle in frame for needle in needles):
                return component, frame
    return OTHER, frames[-1] if frames else ""


Counts = collections.Counter[str]


def profile(cfg: Config, tmp: Path, conns: int) -> tuple[Counts, Counts, float, float]:
    """(samples per component, samples per CherryPy function, server CPU us per request,
    req/s) of one profiled wrk run."""
    port = free_port()
    raw = tmp / "profile.txt"
    serve = [PYTHON, "-m", "cpsysd", "serve", "-c", str(description(tmp, port))]
    spy = [str(VENV / "bin" / "py-spy"), "record", "--gil", "--rate", "250", "--format", "raw",
           "--output", str(raw), "--duration", "600", "--", *serve]  # fmt: skip
    with Procs() as procs:
        proc = procs.start(spy, log=tmp / "py-spy.log")
        try:
            wait_http(port, timeout=30)
        except RuntimeError:
            say((tmp / "py-spy.log").read_text(errors="replace")[-3000:])
            raise
        server = [pid for pid in _children(proc.pid)]
        result = load(f"http://127.0.0.1:{port}/", server, conns, cfg.duration * 1.5)
        os.kill(proc.pid, signal.SIGINT)  # py-spy writes its output on Ctrl-C
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            say("   py-spy did not stop on SIGINT")
    counts: Counts = collections.Counter()
    cherrypy: Counts = collections.Counter()
    for line in raw.read_text().splitlines():
        stack, _, number = line.rpartition(" ")
        component, frame = classify(stack.split(";"))
        counts[component] += int(number)
        if component.startswith("CherryPy"):
            cherrypy[frame.split(" (")[0] + " (" + frame.split("/")[-1].split(":")[0] + ")"] += int(
                number
            )
    return counts, cherrypy, result.cpu_us, result.wrk.rps


def _children(pid: int) -> list[int]:
    for _ in range(100):
        try:
            text = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        except OSError:
            text = []
        if text:
            return [int(x) for x in text]
        time.sleep(0.05)
    raise RuntimeError("py-spy started no server")


def run(cfg: Config) -> Section:
    section = Section("Per-request profile")
    with tempfile.TemporaryDirectory(prefix="cpsysd-bench-prof-") as name:
        counts, cherrypy, cpu_us, rate = profile(cfg, Path(name), 16)
    total = sum(counts.values()) or 1
    lines = ["| component | share of GIL-held samples | us per request |", "|---|---|---|"]
    for component, samples in counts.most_common():
        share = samples / total
        lines.append(f"| {component} | {share * 100:.0f}% | {share * cpu_us:.0f} |")
        section.row(
            f"per request: {component}", f"{share * cpu_us:.0f} us", "", "", f"{share * 100:.0f}%"
        )
    lines.append(f"| **all (server CPU per request, /proc)** | 100% | **{cpu_us:.0f}** |")
    section.row(
        "server CPU per request (all threads)", f"{cpu_us:.0f} us", "", "", f"{rate:.0f} req/s"
    )
    section.details.append(
        "`py-spy record --gil` (samples only the thread holding the GIL, so waiting threads "
        "are not counted) of `cpsysd serve` binding 127.0.0.1 itself (py-spy starts it, so "
        "it cannot be socket-activated: LISTEN_PID would name py-spy), under wrk with 16 "
        "keep-alive connections. Each sample is charged to the innermost frame that belongs "
        "to a component below; the microseconds are the share times the server's measured "
        "CPU time per request (GIL-free time, e.g. inside syscalls, is spread the same way)."
    )
    section.details.append("\n".join(lines))
    inner = ["| inside CherryPy: innermost function | us per request |", "|---|---|"]
    for function, samples in cherrypy.most_common(12):
        inner.append(f"| {function} | {samples / total * cpu_us:.0f} |")
    section.details.append("\n".join(inner))
    return section
