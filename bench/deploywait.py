"""The longest request wait during a deploy (issue 17), under a real systemd (the harness
container): one app under 4 looping clients while it is replaced three ways,

* ``cpsysd deploy`` (a new release started beside the live one on the same sockets, swapped
  after its health gate),
* ``systemctl restart`` of the same app's live unit (every request waits out a cold start),
* gunicorn's graceful reload (``systemctl reload`` = SIGHUP: new workers, then the old ones stop)
  of the same app as WSGI, gunicorn run as a service the way its docs deploy it,

and for each: the longest single request wait, the failed requests, and the p99 of the requests
during the swap against the steady p99 just before it (the issue's goal: at most 2x).

The deploy runs with ``--debug``, its lines time-stamped as they come, so each slow request is
charged to the deploy's phase it began in (build, start and health gate, grace, the socket swap,
after it); "during the swap" is then two windows: the whole command, and the socket swap itself
(from the ``daemon-reload`` that points the sockets at the new release to the old release's stop
returning).
"""

from __future__ import annotations

import json
import os
import shlex
import statistics
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import boxlib
from benchlib import Chart, Samples, Section, say
from config import Config

from cpsysd.harness.container import Container

CLIENTS = 4
# A/B in the same container and rounds: DEPLOYWAIT_BASELINE=DIR (a tree with cpsysd/, e.g. from
# git archive) adds "cpsysd deploy (baseline)", the same deploy run by that cpsysd.
BASELINE = os.environ.get("DEPLOYWAIT_BASELINE")
BOX_BASELINE = "/opt/cpsysd-baseline"
APP_PORT, GUNICORN_PORT = 8080, 8090
DESCRIPTION = "/etc/cpsysd/hello.toml"

# One new connection per request (what a proxy without keep-alive does), until a stop file
# appears or a bound is hit; every request as [start (wall clock), seconds, ok].
CLIENT = r"""
import http.client, json, os, sys, time
port, stop_file = int(sys.argv[1]), sys.argv[2]
deadline, records = time.monotonic() + 300, []
while not os.path.exists(stop_file) and time.monotonic() < deadline and len(records) < 200000:
    start, t0 = time.time(), time.monotonic()
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        conn.request("GET", "/", headers={"Connection": "close"})
        response = conn.getresponse()
        response.read()
        conn.close()
        ok = response.status == 200
    except Exception:
        ok = False
    records.append([round(start, 4), round(time.monotonic() - t0, 5), int(ok)])
print(json.dumps(records))
"""

# Time-stamps every line of a command's output as it arrives (the deploy's --debug lines).
STAMP = "import sys, time\nfor line in sys.stdin: print(f'{time.time():.4f} {line}', end='')"
# A deploy's phases, by the first --debug line (after the previous phase) that starts each one.
PHASES = (
    ("build", "building release"),
    ("start+gate", "running systemctl start "),
    ("grace", "running systemctl show "),
    ("swap", "running systemctl daemon-reload"),
    ("after", "running "),  # whatever follows the old release's stop
)


@dataclass(frozen=True)
class Swap:
    """One replacement under load."""

    longest_ms: float  # the longest single request that overlapped the swap
    steady_longest_ms: float  # the longest in the steady seconds before: the machine's noise
    failed: int  # failed requests over the whole run
    steady_p99_ms: float  # before the swap
    swap_p99_ms: float  # requests overlapping the swap window
    requests: int
    longest_at: float  # when the longest request started, seconds after the action began
    action_s: float  # how long the action (deploy, restart, reload command) took
    narrow_p99_ms: float  # requests overlapping the socket swap itself (deploy), else = swap
    longest_phase: str  # the deploy's phase the longest request began in ("" otherwise)
    # per phase: "seconds s, requests, over 2x steady p99, p99 ms" (deploys only)
    by_phase: dict[str, str] = field(default_factory=dict)


def _p99(values: list[float]) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


def _clients(
    box: Container, port: int, stop_file: str
) -> tuple[list[threading.Thread], list[list[list[float]]]]:
    out: list[list[list[float]]] = []

    def one() -> None:
        argv = [boxlib.SYSTEM_PYTHON, "-c", CLIENT, str(port), stop_file]
        out.append(json.loads(box.run(argv, timeout=400).stdout))

    threads = [threading.Thread(target=one, daemon=True) for _ in range(CLIENTS)]
    for thread in threads:
        thread.start()
    return threads, out


def _phases(output: str) -> list[tuple[str, float]]:
    """[(phase, when it began)] from a deploy's time-stamped --debug lines."""
    found: list[tuple[str, float]] = []
    todo = list(PHASES)
    stopping = False
    for line in output.splitlines():
        stamp, _, text = line.partition(" ")
        if not todo or not text.startswith("cpsysd: debug: "):
            continue
        name, marker = todo[0]
        if name == "after" and not stopping:
            stopping = "running systemctl stop " in text
            continue
        if marker in text:
            found.append((name, float(stamp)))
            todo.pop(0)
    return found


def _phase_at(phases: list[tuple[str, float]], when: float) -> str:
    current = "before"
    for name, began in phases:
        if when >= began:
            current = name
    return current


def under_load(box: Container, port: int, action: list[str], steady: float) -> Swap:
    """4 clients on ``port``; ``steady`` seconds, then ``action`` (run to its end), then 1 s."""
    stop_file = f"/run/bench-stop-{time.monotonic_ns()}"
    threads, out = _clients(box, port, stop_file)
    try:
        time.sleep(1.0)  # the clients' interpreters are up
        t0 = time.time()
        time.sleep(steady)
        t1 = time.time()
        stamped = f"{shlex.join(action)} 2>&1 | {boxlib.SYSTEM_PYTHON} -u -c {shlex.quote(STAMP)}"
        output = boxlib.run(box, ["bash", "-c", f"set -o pipefail; {stamped}"],
                            timeout=300)  # fmt: skip
        t2 = time.time() + 1.0  # a reload returns before its new workers take over
        time.sleep(1.0)
    finally:
        box.run(["touch", stop_file])
        for thread in threads:
            thread.join(60)
    if len(out) != CLIENTS:
        raise RuntimeError(f"only {len(out)} of {CLIENTS} load clients reported")
    records = [record for client in out for record in client]
    steady_lat = [lat for start, lat, ok in records if t0 <= start < t1]
    overlapping = [(lat, start) for start, lat, ok in records if start < t2 and start + lat > t1]
    during = [lat for lat, _ in overlapping]
    longest = max(overlapping, default=(float("nan"), t1))
    phases = _phases(output)
    narrow = [lat for lat, start in overlapping if _in_swap(phases, start, lat)]
    by_phase: dict[str, list[float]] = {}
    for lat, start in overlapping:
        by_phase.setdefault(_phase_at(phases, start), []).append(lat)
    ends = [*(began for _, began in phases[1:]), t2 - 1.0][: len(phases)]
    seconds = {name: end - began for (name, began), end in zip(phases, ends, strict=True)}
    limit = 2 * _p99(steady_lat)
    return Swap(
        longest_ms=longest[0] * 1000,
        steady_longest_ms=max(steady_lat, default=float("nan")) * 1000,
        longest_at=longest[1] - t1,
        action_s=t2 - 1.0 - t1,
        failed=sum(1 for *_, ok in records if not ok),
        steady_p99_ms=_p99(steady_lat) * 1000,
        swap_p99_ms=_p99(during) * 1000,
        requests=len(records),
        narrow_p99_ms=_p99(narrow) * 1000 if phases else _p99(during) * 1000,
        longest_phase=_phase_at(phases, longest[1]) if phases else "",
        by_phase={
            name: f"{seconds.get(name, float('nan')):.1f} s, {len(lats)} req, "
            f"{sum(1 for lat in lats if lat > limit)} slow, p99 {_p99(lats) * 1000:.0f} ms"
            for name, lats in by_phase.items()
        }
        if phases
        else {},
    )


def _in_swap(phases: list[tuple[str, float]], start: float, lat: float) -> bool:
    """Whether a request overlapped the socket swap (pointing the sockets, the old one's stop)."""
    began = dict(phases)
    if "swap" not in began:
        return False
    return start < began.get("after", float("inf")) and start + lat > began["swap"]


def _live_unit(box: Container) -> str:
    return boxlib.run(box, ["systemctl", "show", "-P", "Triggers", "hello.socket"]).split()[0]


def _measure(box: Container, rounds: int, steady: float) -> dict[str, list[Swap]]:
    boxlib.install(box, "hello", APP_PORT, extra='health_path = "/health"\n')
    deploy = [boxlib.BOX_PYTHON, "-m", "cpsysd", "--debug", "deploy", "-c", DESCRIPTION]
    boxlib.run(box, deploy, timeout=300)  # release r1 replaces hello.service
    baseline = ["env", f"PYTHONPATH={BOX_BASELINE}", *deploy]
    if BASELINE:
        for part in ("cpsysd", "units"):  # the unit templates sit beside the package
            box.copy_in(f"{BASELINE}/{part}", f"{BOX_BASELINE}/{part}", exclude=["__pycache__"])
        boxlib.run(box, [boxlib.BOX_PYTHON, "-m", "compileall", "-q", BOX_BASELINE])
    boxlib.add_gunicorn(box, workers=2)
    boxlib.run(box, ["systemctl", "start", f"gunicorn@{GUNICORN_PORT}.service"])
    boxlib.wait_http(box, GUNICORN_PORT)
    results: dict[str, list[Swap]] = {}
    for rep in range(rounds):
        say(f"   round {rep + 1}/{rounds}")
        # The restart's unit is looked up when its turn comes: the deploys before it in the
        # round made another release live (and stopped, or pruned, the one live before).
        runs: dict[str, tuple[int, Callable[[], list[str]]]] = {
            **({"cpsysd deploy (baseline)": (APP_PORT, lambda: baseline)} if BASELINE else {}),
            "cpsysd deploy": (APP_PORT, lambda: deploy),
            "systemctl restart": (APP_PORT, lambda: ["systemctl", "restart", _live_unit(box)]),
            "gunicorn HUP (systemctl reload)": (
                GUNICORN_PORT,
                lambda: ["systemctl", "reload", f"gunicorn@{GUNICORN_PORT}.service"],
            ),
        }
        for name, (port, action) in runs.items():
            swap = under_load(box, port, action(), steady)
            say(
                f"   {name}: longest {swap.longest_ms:.0f} ms (steady {swap.steady_longest_ms:.0f} "
                f"ms), {swap.failed} failed, p99 "
                f"{swap.swap_p99_ms:.0f} ms (socket swap {swap.narrow_p99_ms:.0f} ms) vs steady "
                f"{swap.steady_p99_ms:.0f} ms; the longest began {swap.longest_at:+.2f} s into a "
                f"{swap.action_s:.2f} s action"
                + (f" ({swap.longest_phase})" if swap.longest_phase else "")
            )
            for phase, figures in swap.by_phase.items():
                say(f"      {phase}: {figures}")
            results.setdefault(name, []).append(swap)
    return results


FIGURES: dict[str, float] = {}  # {action: median longest wait in ms}, for the chart


def run(cfg: Config) -> Section:
    section = Section("Deploy under load")
    rounds = 1 if cfg.quick else cfg.reps
    steady = 2.0 if cfg.quick else 4.0
    with boxlib.booted() as box:
        results = _measure(box, rounds, steady)
    for name, swaps in results.items():
        longest = Samples([swap.longest_ms for swap in swaps])
        ratio = Samples([swap.swap_p99_ms / swap.steady_p99_ms for swap in swaps])
        FIGURES[name] = longest.median
        section.row(
            f"longest request wait during {name}",
            f"{longest.median:.0f} ms",
            f"p99 {ratio.median:.2f}x steady",
            longest.spread(),
            f"{sum(s.failed for s in swaps)} failed of {sum(s.requests for s in swaps)}; p99 "
            f"{statistics.median(s.swap_p99_ms for s in swaps):.0f} ms during (socket swap "
            f"{statistics.median(s.narrow_p99_ms for s in swaps):.0f} ms, "
            f"{statistics.median(s.narrow_p99_ms / s.steady_p99_ms for s in swaps):.2f}x) vs "
            f"{statistics.median(s.steady_p99_ms for s in swaps):.0f} ms steady; longest "
            f"{statistics.median(s.steady_longest_ms for s in swaps):.0f} ms in the steady seconds",
        )
    section.charts.append(
        Chart(
            f"Longest request wait while the app is replaced ({CLIENTS} clients)",
            "ms",
            tuple(FIGURES.items()),
        )
    )
    deploy = results["cpsysd deploy"]
    section.headline.append(
        f"Deploy under {CLIENTS} looping clients: the longest request wait is "
        f"{FIGURES['cpsysd deploy']:.0f} ms during `cpsysd deploy` "
        f"({sum(s.failed for s in deploy)} failed), "
        f"{FIGURES['systemctl restart']:.0f} ms during `systemctl restart`, "
        f"{FIGURES['gunicorn HUP (systemctl reload)']:.0f} ms during gunicorn's HUP reload; "
        "p99 during the deploy "
        f"{statistics.median(s.swap_p99_ms / s.steady_p99_ms for s in deploy):.2f}x and during "
        "the socket swap "
        f"{statistics.median(s.narrow_p99_ms / s.steady_p99_ms for s in deploy):.2f}x the steady "
        "p99 (goal: at most 2x)."
    )
    section.details.append(
        "Inside the harness container (systemd 252): the example app installed with "
        '`health_path = "/health"` and deployed once (release r1), and gunicorn 2 sync workers '
        "of the same app as WSGI in a `Type=simple` unit with `ExecReload=kill -HUP $MAINPID`. "
        f"{CLIENTS} clients (Debian's python3, one new connection per request) loop on the app "
        f"for {steady:g} s of steady load, then through the action (`cpsysd deploy`, "
        "`systemctl restart` of the live release unit, `systemctl reload` of gunicorn) and 1 s "
        "after it returns. The longest wait and the swap p99 are over the requests that "
        "overlapped that window; the steady p99 over those of the steady seconds before it. "
        f"{rounds} round(s), each doing all three; figures are medians over rounds."
    )
    return section
