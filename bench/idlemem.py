"""Idle apps cost no memory (issue 20), under a real systemd (the harness container): the summed
PSS of every process of 20 idle apps installed with ``idle_stop_sec``, against 20 always-on
``cpsysd serve`` apps and 20 gunicorn services (master + 1 sync worker), and the first request
after the idle stop (one cold start) against a request to a running app.

Each group runs alone (the previous one is stopped first), has answered requests, and then sits
idle; the idle apps are measured once systemd reports every one of their services inactive
(their sockets still listening).
"""

from __future__ import annotations

import statistics
import time

import boxlib
from benchlib import Chart, Section, say
from config import Config

from cpsysd.harness.container import Container

IDLE_STOP_SEC = 2
FIGURES: dict[str, float] = {}  # {group: PSS MiB}, for the chart


def _wait_inactive(box: Container, units: list[str], timeout: float = 120) -> float:
    """Seconds until every unit is inactive (the idle stop), bounded by ``timeout``."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if all(state == "inactive" for state in boxlib.active_states(box, units)):
            return time.monotonic() - start
        time.sleep(0.5)
    raise RuntimeError(f"{len(units)} idle apps were not all stopped within {timeout:g} s")


def _serve_each(box: Container, ports: list[int], requests: int = 5) -> None:
    for port in ports:
        for _ in range(requests):
            status, _ = boxlib.curl(box, port)
            if status != 200:
                raise RuntimeError(f"port {port} answered {status}")


def _measure(box: Container, count: int) -> dict[str, object]:
    names = boxlib.unit_names("on", count)
    on_ports = [8100 + i for i in range(1, count + 1)]
    for name, port in zip(names, on_ports, strict=True):
        boxlib.install(box, name, port)
    _serve_each(box, on_ports)
    time.sleep(1.0)
    on = boxlib.pss_kib(box, [f"{name}.service" for name in names])
    boxlib.run(box, ["systemctl", "stop", *(f"{n}.socket" for n in names)])
    boxlib.run(box, ["systemctl", "stop", *(f"{n}.service" for n in names)])

    boxlib.add_gunicorn(box, workers=1)
    g_ports = [8300 + i for i in range(1, count + 1)]
    g_units = [f"gunicorn@{port}.service" for port in g_ports]
    boxlib.run(box, ["systemctl", "start", *g_units])
    for port in g_ports:
        boxlib.wait_http(box, port)
    _serve_each(box, g_ports)
    time.sleep(1.0)
    gunicorn = boxlib.pss_kib(box, g_units)
    boxlib.run(box, ["systemctl", "stop", *g_units])

    idle_names = boxlib.unit_names("idle", count)
    idle_ports = [8200 + i for i in range(1, count + 1)]
    for name, port in zip(idle_names, idle_ports, strict=True):
        boxlib.install(box, name, port, extra=f"idle_stop_sec = {IDLE_STOP_SEC}\n")
    _serve_each(box, idle_ports)
    idle_units = [f"{name}.service" for name in idle_names]
    waited = _wait_inactive(box, idle_units)
    time.sleep(1.0)
    idle = boxlib.pss_kib(box, idle_units)
    sockets = boxlib.active_states(box, [f"{name}.socket" for name in idle_names])
    # One cold start per app, for a few apps; then a request to the now running app.
    cold, warm = [], []
    for port in idle_ports[: min(count, 5)]:
        status, seconds = boxlib.curl(box, port)
        if status != 200:
            raise RuntimeError(f"first request after idle to port {port} answered {status}")
        cold.append(seconds)
        warm.append(boxlib.curl(box, port)[1])
    return {
        "on": on,
        "gunicorn": gunicorn,
        "idle": idle,
        "waited": waited,
        "sockets_active": sum(state == "active" for state in sockets),
        "cold_ms": statistics.median(cold) * 1000,
        "warm_ms": statistics.median(warm) * 1000,
        "cold_runs": len(cold),
    }


def _mib(pair: object) -> float:
    kib, _ = pair  # type: ignore[misc]
    return float(kib) / 1024


def run(cfg: Config) -> Section:
    section = Section("Idle apps")
    count = 3 if cfg.quick else 20
    say(f"   booting the harness container, installing {3 * count} services")
    with boxlib.booted() as box:
        got = _measure(box, count)
    groups = (
        (f"{count} apps with idle_stop_sec = {IDLE_STOP_SEC}, idle", "idle"),
        (f"{count} always-on cpsysd serve", "on"),
        (f"{count} gunicorn (master + 1 sync worker)", "gunicorn"),
    )
    for label, key in groups:
        kib, processes = got[key]  # type: ignore[misc]
        FIGURES[label] = kib / 1024
        section.row(f"PSS sum: {label}", f"{kib / 1024:.1f} MiB", "", "", f"{processes} processes")
    section.charts.append(
        Chart(f"Idle apps: PSS sum of {count} apps' processes", "MiB", tuple(FIGURES.items()))
    )
    section.row(
        "first request after the idle stop (one cold start)",
        f"{got['cold_ms']:.0f} ms",
        "",
        "",
        f"median of {got['cold_runs']} apps; a request to a running app: {got['warm_ms']:.0f} ms",
    )
    section.headline.append(
        f"Idle apps: {count} apps with `idle_stop_sec`, idle, hold "
        f"{_mib(got['idle']):.1f} MiB of process memory (PSS) against "
        f"{_mib(got['on']):.0f} MiB for {count} always-on `cpsysd serve` and "
        f"{_mib(got['gunicorn']):.0f} MiB for {count} gunicorn (master + 1 worker); the first "
        f"request after idle waits one cold start, {got['cold_ms']:.0f} ms."
    )
    section.details.append(
        "Inside the harness container (systemd 252, the project's hardened units): the example "
        f"app installed {count} times with `cpsysd install` on ports of its own, each sent 5 "
        "requests, then left alone. PSS is summed from /proc/PID/smaps_rollup over every "
        "process in each service's cgroup. The always-on and gunicorn groups are measured 1 s "
        "after their last request and stopped before the next group starts; gunicorn runs as "
        "a `Type=simple` template unit (`-w 1 -k sync`, the same app as WSGI). The idle group "
        f"(`idle_stop_sec = {IDLE_STOP_SEC}`) is measured once systemd reports every service "
        f"inactive ({got['waited']:.0f} s after the last request), with "
        f"{got['sockets_active']} of {count} sockets still listening. The cold start is curl's "
        "time_total for the first request to a stopped app (systemd starts it), next to a "
        "second request to the same, now running, app."
    )
    return section
