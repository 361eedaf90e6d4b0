"""What every benchmark section needs: processes that are always killed, free ports, wrk runs,
medians with their spread, and the record of the exact commands for RESULTS.md.

Every process is started through :class:`Procs`, which remembers its PID and process group and
ends it (SIGTERM, then SIGKILL after a grace period) when the section is done, even on errors.
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
VENV = ROOT / ".venv"
PYTHON = str(VENV / "bin" / "python")
HELLO_DIR = ROOT / "examples" / "hello"
HELLO_TOML = HELLO_DIR / "cpsysd.toml"


# --------------------------------------------------------------------------- commands record
class CommandLog:
    """The distinct command lines run, with ports and temp paths replaced by placeholders."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def add(self, argv: Sequence[str], env: dict[str, str] | None = None) -> None:
        prefix = " ".join(f"{k}={shlex.quote(v)}" for k, v in sorted((env or {}).items()))
        text = (prefix + " " if prefix else "") + shlex.join(argv)
        text = text.replace(str(ROOT) + "/", "")
        text = re.sub(r"(?<=[:= ])[1-6]\d{4}\b", "$PORT", text)  # ephemeral ports only
        text = re.sub(r"/tmp/[\w.-]+", "$TMP", text)
        if text not in self.lines:
            self.lines.append(text)


COMMANDS = CommandLog()


# --------------------------------------------------------------------------- processes
class Procs:
    """Starts processes in their own process group; :meth:`close` ends every one by PID."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(
        self,
        argv: Sequence[str],
        env: dict[str, str] | None = None,
        log: Path | None = None,
        pass_fds: Sequence[int] = (),
        cwd: Path | None = None,
    ) -> subprocess.Popen[bytes]:
        COMMANDS.add(argv, env)
        full_env = {**os.environ, **(env or {})}
        for var in ("LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES", "NOTIFY_SOCKET"):
            if env is None or var not in env:
                full_env.pop(var, None)
        out = open(log, "ab") if log else subprocess.DEVNULL  # noqa: SIM115
        try:
            proc = subprocess.Popen(
                list(argv),
                env=full_env,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                pass_fds=tuple(pass_fds),
                # Own process group (for killpg), but not its own session: with the kernel's
                # autogroup scheduling (sched(7)) a new session is a new CPU-share group,
                # which would cap a 2-process server at one group's share on a busy machine.
                process_group=0,
                # Not the checkout: `python -m cpsysd` puts the working directory first on
                # sys.path, which would shadow PYTHONPATH (see run.py on measuring another tree).
                cwd=cwd or "/",
            )
        finally:
            if log:
                out.close()  # type: ignore[union-attr]
        self.procs.append(proc)
        return proc

    def stop(self, proc: subprocess.Popen[bytes], grace: float = 5.0) -> None:
        """SIGTERM the process group led by ``proc`` (started as its own process group),
        SIGKILL whatever is left after ``grace`` seconds."""
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(grace)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # children that outlived their parent
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(2)
        if proc in self.procs:
            self.procs.remove(proc)

    def close(self) -> None:
        for proc in list(self.procs):
            self.stop(proc)

    def __enter__(self) -> Procs:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def free_port() -> int:
    """A port nobody listens on now (the kernel's pick), for 127.0.0.1."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def listening(port: int) -> bool:
    """Whether something listens on ``port`` (read from /proc/net/tcp*, without connecting:
    a connection would start a socket-activated service)."""
    want = f":{port:04X}"
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError), open(table) as f:
            for line in f.readlines()[1:]:
                parts = line.split()
                if parts[1].endswith(want) and parts[3] == "0A":
                    return True
    return False


def wait_listening(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not listening(port):
        if time.monotonic() > deadline:
            raise RuntimeError(f"nothing listens on port {port} after {timeout} s")
        time.sleep(0.005)


def http_get(
    port: int, path: str = "/", timeout: float = 5.0, host: str = "127.0.0.1", tls: bool = False
) -> bytes:
    """One HTTP/1.0 request on a new connection (TLS without certificate checks: a benchmark
    of our own loopback server); the whole response."""
    with socket.create_connection((host, port), timeout=timeout) as raw:
        sock = raw
        if tls:
            context = ssl.create_default_context()
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
            sock = context.wrap_socket(raw)
        sock.sendall(f"GET {path} HTTP/1.0\r\nHost: bench\r\n\r\n".encode())
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def wait_http(port: int, timeout: float = 20.0, path: str = "/", tls: bool = False) -> None:
    """Wait until ``GET path`` answers 200 (a started server, warmed by one request)."""
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            if b" 200 " in http_get(port, path, timeout=2, tls=tls).split(b"\r\n", 1)[0]:
                return
        except OSError as err:
            last = err
        time.sleep(0.05)
    raise RuntimeError(f"no 200 from port {port} within {timeout} s ({last})")


# --------------------------------------------------------------------------- wrk
@dataclass(frozen=True)
class WrkResult:
    rps: float
    p99_ms: float
    requests: int
    errors: int


_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}


def _ms(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text)
    if not match:
        raise ValueError(f"unexpected wrk latency {text!r}")
    return float(match.group(1)) * _UNITS[match.group(2)]


def parse_wrk(out: str) -> WrkResult:
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    p99 = re.search(r"^\s+99%\s+(\S+)", out, re.M)
    total = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    errors = 0
    sock_err = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out
    )
    if sock_err:
        # wrk counts a server's close after a non-keep-alive response as a read error
        errors += int(sock_err.group(1)) + int(sock_err.group(3)) + int(sock_err.group(4))
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if non2xx:
        errors += int(non2xx.group(1))
    return WrkResult(rps, _ms(p99.group(1)) if p99 else float("nan"), total, errors)


def wrk(
    url: str,
    connections: int,
    duration: float,
    threads: int = 1,
    headers: Sequence[str] = (),
) -> WrkResult:
    """One bounded wrk run (``-d``, plus a hard timeout) against a loopback URL."""
    seconds = max(1, round(duration))  # wrk takes whole seconds only
    argv = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "--latency"]
    for header in headers:
        argv += ["-H", header]
    argv.append(url)
    COMMANDS.add(argv)
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 30, check=True)
    return parse_wrk(proc.stdout)


_TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(roots: Sequence[int]) -> float:
    """User + system CPU time of ``roots`` and their descendants (/proc/PID/stat, proc(5))."""
    total = 0
    for root in roots:
        for pid in pids_of_tree(root):
            with contextlib.suppress(OSError), open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
                total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / _TICK


@dataclass(frozen=True)
class Load:
    """One wrk run against a server, with the server's CPU time per request."""

    wrk: WrkResult
    cpu_us: float  # server CPU (all its processes) per completed request, in microseconds


def load(
    url: str,
    roots: Sequence[int],
    connections: int,
    duration: float,
    headers: Sequence[str] = (),
) -> Load:
    """wrk against ``url`` while counting the CPU time the server processes ``roots`` use."""
    before = cpu_seconds(roots)
    result = wrk(url, connections, duration, headers=headers)
    used = cpu_seconds(roots) - before
    return Load(result, used / max(result.requests, 1) * 1e6)


# --------------------------------------------------------------------------- statistics
@dataclass
class Samples:
    """Repeated measurements of one figure."""

    values: list[float] = field(default_factory=list)

    def add(self, value: float) -> None:
        self.values.append(value)

    @property
    def median(self) -> float:
        return statistics.median(self.values) if self.values else float("nan")

    def spread(self) -> str:
        """min-max of the runs, as +-% of the median."""
        if len(self.values) < 2 or not self.median:
            return ""
        lo = (min(self.values) / self.median - 1) * 100
        hi = (max(self.values) / self.median - 1) * 100
        return f"{lo:+.0f}/{hi:+.0f}%"


def ratio_samples(num: Samples, den: Samples) -> Samples:
    """Per-repetition ratios (run i of ``num`` over run i of ``den``, measured back to back)."""
    return Samples([a / b for a, b in zip(num.values, den.values, strict=False) if b])


# --------------------------------------------------------------------------- memory
def pids_of_tree(pid: int) -> list[int]:
    """``pid`` and all its descendants (from /proc/*/stat)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        with contextlib.suppress(OSError), open(f"/proc/{entry}/stat") as f:
            ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        current = todo.pop()
        out.append(current)
        todo.extend(children.get(current, []))
    return out


def memory_kib(pid: int) -> tuple[int, int]:
    """(RSS, PSS) in KiB of one process, from /proc/PID/smaps_rollup."""
    rss = pss = 0
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            if line.startswith("Rss:"):
                rss = int(line.split()[1])
            elif line.startswith("Pss:"):
                pss = int(line.split()[1])
    return rss, pss


def tree_memory_kib(pid: int) -> tuple[int, int, int]:
    """(sum RSS, sum PSS, process count) of ``pid`` and its descendants."""
    rss = pss = count = 0
    for p in pids_of_tree(pid):
        with contextlib.suppress(OSError):
            r, s = memory_kib(p)
            rss, pss, count = rss + r, pss + s, count + 1
    return rss, pss, count


# --------------------------------------------------------------------------- output
@dataclass(frozen=True)
class Row:
    """One line of the results table."""

    section: str
    what: str
    value: str
    ratio: str = ""
    spread: str = ""
    note: str = ""


@dataclass(frozen=True)
class Chart:
    """One panel of the chart report.py draws: side-by-side figures in one unit."""

    title: str
    unit: str  # "x" for ratios (drawn with a line at 1.0), else e.g. "req/s", "MiB", "ms"
    bars: tuple[tuple[str, float], ...]


@dataclass
class Section:
    title: str
    rows: list[Row] = field(default_factory=list)
    details: list[str] = field(default_factory=list)  # markdown paragraphs
    headline: list[str] = field(default_factory=list)
    charts: list[Chart] = field(default_factory=list)  # drawn into the results' SVG

    def row(self, what: str, value: str, ratio: str = "", spread: str = "", note: str = "") -> None:
        self.rows.append(Row(self.title, what, value, ratio, spread, note))
        print(f"  {what:<58} {value:>16} {ratio:>8} {spread:>10} {note}", flush=True)


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


@contextlib.contextmanager
def timed(label: str) -> Iterator[None]:
    start = time.monotonic()
    yield
    say(f"   ({label}: {time.monotonic() - start:.1f} s)")
