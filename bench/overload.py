"""The tail under overload: 500 connections for 10 s (``wrk -c 500 -d 10``) against two
``cpsysd serve`` instances on one port, gunicorn (sync, 2 workers) and uWSGI (2 processes), the
same app and config. Reported per server: req/s, p50/p99, every kind of wrk error (connect,
read, write, timeout) and, apart from them, the non-2xx answers (cpsysd's 503 past its queue
bound is an answer, but it is counted and shown)."""

from __future__ import annotations

import re
import statistics
import subprocess
from dataclasses import dataclass
from functools import partial

from benchlib import COMMANDS, Procs, Section, _ms, cpu_seconds, free_port, say
from config import Config
from servers import (
    CPSYSD_PRODUCTION,
    Contender,
    gunicorn_argv,
    reuseport_contender,
    uwsgi_argv,
    wsgi_contender,
)

CONNECTIONS = 500
SECONDS = 10
# The same listen backlog everywhere: systemd's Backlog= in the generated socket units (and
# bench's reuseport sockets) is 1024; gunicorn's default is 2048; uWSGI's 100 is raised to it.
BACKLOG = 1024

CPSYSD_2 = reuseport_contender("cpsysd serve x2", CPSYSD_PRODUCTION, 2)
GUNICORN_SYNC = wsgi_contender("gunicorn sync -w2", partial(gunicorn_argv, worker_class="sync"))
UWSGI = wsgi_contender("uWSGI --processes 2", partial(uwsgi_argv, listen=BACKLOG))
ALL = (CPSYSD_2, GUNICORN_SYNC, UWSGI)


@dataclass(frozen=True)
class Overload:
    """One wrk run at overload, with everything wrk counts."""

    rps: float
    p50_ms: float
    p99_ms: float
    requests: int
    connect: int
    read: int
    write: int
    timeout: int
    non2xx: int
    cpu_us: float

    @property
    def errors(self) -> int:
        """Requests that got no answer: wrk's socket errors of every kind."""
        return self.connect + self.read + self.write + self.timeout


def parse(out: str, cpu_us: float) -> Overload:
    def number(pattern: str) -> int:
        match = re.search(pattern, out)
        return int(match.group(1)) if match else 0

    def latency(pct: str) -> float:
        match = re.search(rf"^\s+{pct}%\s+(\S+)", out, re.M)
        return _ms(match.group(1)) if match else float("nan")

    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    connect, read, write, timeout = (int(g) for g in sock.groups()) if sock else (0, 0, 0, 0)
    return Overload(
        float(rps.group(1)) if rps else 0.0,
        latency("50"),
        latency("99"),
        number(r"(\d+) requests in"),
        connect,
        read,
        write,
        timeout,
        number(r"Non-2xx or 3xx responses: (\d+)"),
        cpu_us,
    )


def overload(port: int, roots: list[int], seconds: int) -> Overload:
    """One bounded wrk run (``-d``, plus a hard timeout) with the server's CPU time."""
    argv = ["wrk", "-t1", f"-c{CONNECTIONS}", f"-d{seconds}s", "--latency"]
    argv.append(f"http://127.0.0.1:{port}/")
    COMMANDS.add(argv)
    before = cpu_seconds(roots)
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 30, check=True)
    used = cpu_seconds(roots) - before
    result = parse(proc.stdout, 0.0)
    return parse(proc.stdout, used / max(result.requests, 1) * 1e6)


def measure(
    contenders: tuple[Contender, ...], reps: int, seconds: int
) -> dict[str, list[Overload]]:
    """Every contender started once, then ``reps`` rounds in a rotated order (as compare())."""
    results: dict[str, list[Overload]] = {}
    with Procs() as procs:
        started = []
        for contender in contenders:
            port = free_port()
            started.append((contender, port, contender.start(procs, port)))
        for rep in range(reps):
            for contender, port, roots in (
                started[rep % len(started) :] + started[: rep % len(started)]
            ):
                result = overload(port, roots, seconds)
                results.setdefault(contender.name, []).append(result)
                say(
                    f"   [{rep + 1}/{reps}] {contender.name} c={CONNECTIONS}: "
                    f"{result.rps:.0f} req/s, p99 {result.p99_ms:.0f} ms, errors "
                    f"connect {result.connect} read {result.read} write {result.write} "
                    f"timeout {result.timeout}, non-2xx {result.non2xx}"
                )
    return results


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def run(cfg: Config) -> Section:
    section = Section("Overload")
    seconds = 2 if cfg.quick else SECONDS
    results = measure(ALL, cfg.reps, seconds)
    for contender in ALL:
        runs = results[contender.name]
        section.row(
            f"{contender.name}, {CONNECTIONS} conns",
            f"{_median([r.rps for r in runs]):.0f} req/s",
            f"p99 {_median([r.p99_ms for r in runs]):.0f} ms",
            f"p99 per round: {', '.join(f'{r.p99_ms:.0f}' for r in runs)} ms",
            f"p50 {_median([r.p50_ms for r in runs]):.0f} ms; errors (connect/read/write/"
            f"timeout) {'; '.join(f'{r.connect}/{r.read}/{r.write}/{r.timeout}' for r in runs)}"
            f"; non-2xx {', '.join(str(r.non2xx) for r in runs)}; "
            f"{_median([r.cpu_us for r in runs]):.0f} us CPU/req",
        )
    ours, gunicorn = results[CPSYSD_2.name], results[GUNICORN_SYNC.name]
    ratios = [g.p99_ms / o.p99_ms for o, g in zip(ours, gunicorn, strict=False) if o.p99_ms]
    section.row(
        "p99: gunicorn sync -w2 / cpsysd serve x2",
        "",
        f"{_median(ratios):.2f}x",
        ", ".join(f"{r:.2f}" for r in ratios),
        "goal >= 1.0 (cpsysd's p99 at most gunicorn's), with 0 errors",
    )
    section.headline.append(
        f"With {CONNECTIONS} connections for {seconds} s, two `cpsysd serve` instances answer "
        f"with p99 **{_median([r.p99_ms for r in ours]):.0f} ms** against gunicorn sync -w2's "
        f"{_median([r.p99_ms for r in gunicorn]):.0f} ms; wrk socket errors "
        f"{sum(r.errors for r in ours)} (gunicorn {sum(r.errors for r in gunicorn)}), "
        f"503 answers {sum(r.non2xx for r in ours)} "
        f"over {len(ours)} round(s)."
    )
    section.details.append(
        f"`wrk -t1 -c{CONNECTIONS} -d{seconds}s --latency` against each server in rotated "
        "rounds (wrk's own timeout, 2 s, makes a request slower than that a timeout error). "
        "All serve `bench/apps/production` (the scaling section's app, config and access logs). "
        "cpsysd serve x2: two processes on one SO_REUSEPORT port with Backlog 1024 each, as "
        "systemd passes them; gunicorn's backlog is its default 2048; uWSGI gets "
        f"`--listen {BACKLOG}` (its default 100 would drop SYNs at this load). Errors are every "
        "socket error wrk counts (connect, read, write, timeout); non-2xx answers are shown "
        "apart (cpsysd's 503 with Retry-After past `accepted_queue_size` or "
        "`accepted_queue_timeout`). uWSGI's read errors are its closes after every response "
        "(its http-socket does not keep connections alive and wrk expects HTTP/1.1 to): "
        "about one per request, its requests themselves were answered."
    )
    return section
