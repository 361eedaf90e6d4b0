"""Scale to zero under a real systemd: with ``idle_stop_sec`` the service exits by itself once
idle (inactive, not failed, not restarted), its socket keeps listening, and the next request
starts a new process. The memory the service holds while running and after, and the first
request after the idle stop (one cold start), are recorded as figures."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from e2etools import curl, example_spec, install_app, wait_until

from cpsysd.harness.container import Container

pytestmark = pytest.mark.e2e


def _show(box: Container, prop: str, unit: str = "hello.service") -> str:
    return box.run(["systemctl", "show", "-P", prop, unit]).stdout.strip()


def _rss_kib(box: Container, pid: int) -> int:
    """The main process's resident memory (VmRSS, proc(5)); the cgroup's MemoryCurrent is not
    kept in this container (its memory controller belongs to the host)."""
    status = box.run(["cat", f"/proc/{pid}/status"]).stdout
    return int(next(line for line in status.splitlines() if line.startswith("VmRSS:")).split()[1])


def _memory(box: Container) -> str:
    current = _show(box, "MemoryCurrent")
    return "not reported" if current in ("", "[not set]") or int(current) >= 2**63 else current


def test_idle_service_stops_and_the_next_request_starts_it(
    container: Container, figure: Callable[[str, str], None]
) -> None:
    install_app(container, example_spec(idle_stop_sec=2))
    assert curl(container, "http://127.0.0.1:8080/health")[0] == 200
    first = int(_show(container, "MainPID"))
    assert first != 0
    rss_running = _rss_kib(container, first)
    memory_running = _memory(container)
    _, warm, _ = curl(container, "http://127.0.0.1:8080/health")

    wait_until(
        lambda: _show(container, "ActiveState") == "inactive", timeout=60, what="the idle stop"
    )
    assert _show(container, "Result") == "success"  # exited 0 by itself: not failed
    assert _show(container, "MainPID") == "0"  # no process left: zero process memory
    assert _show(container, "ActiveState", "hello.socket") == "active"
    assert _show(container, "SubState", "hello.socket") == "listening"
    memory_idle = _memory(container)
    journal = container.journal("hello.service")
    assert "idle for 2 s with no connection open" in journal, journal

    status, cold, body = curl(container, "http://127.0.0.1:8080/health")
    assert status == 200, body
    second = int(_show(container, "MainPID"))
    assert second not in (0, first)  # a new process, started by the socket
    assert _show(container, "NRestarts") == "0"  # started by the socket, not Restart=
    wait_until(
        lambda: _show(container, "ActiveState") == "inactive", timeout=60, what="a second stop"
    )
    assert _show(container, "NRestarts") == "0"
    assert _show(container, "Result") == "success"

    figure("idle stop: main process RSS while running", f"{rss_running / 1024:.1f} MiB")
    figure("idle stop: MemoryCurrent running / after idle", f"{memory_running} / {memory_idle}")
    figure("idle stop: request to the running app", f"{warm * 1000:.0f} ms")
    figure("idle stop: first request after idle (cold start)", f"{cold * 1000:.0f} ms")


# Requests spaced around the idle time, so some arrive while an instance is stopping: each is
# queued in the socket's backlog and served (by this instance or the next), none refused.
SPACED_CLIENT = r"""
import http.client, json, sys, time
ok, failed, errors = 0, 0, []
for gap in [float(g) for g in sys.argv[1:]]:
    time.sleep(gap)
    try:
        conn = http.client.HTTPConnection("127.0.0.1", 8080, timeout=30)
        conn.request("GET", "/health", headers={"Connection": "close"})
        response = conn.getresponse()
        response.read()
        ok, failed = (ok + 1, failed) if response.status == 200 else (ok, failed + 1)
    except Exception as err:
        failed += 1
        errors.append(f"{type(err).__name__}: {err}")
print(json.dumps({"ok": ok, "failed": failed, "errors": errors[:3]}))
"""


def test_requests_during_idle_stops_are_all_served(
    container: Container, figure: Callable[[str, str], None]
) -> None:
    python = install_app(container, example_spec(idle_stop_sec=2))
    # Mostly about the idle time (racing the stop), every fourth well past it (a sure stop).
    gaps = [str(4.0 if i % 4 == 3 else 2.0 + 0.1 * (i % 4)) for i in range(12)]
    result = container.run([python, "-c", SPACED_CLIENT, *gaps], timeout=120).stdout
    print(result)
    journal = container.journal("hello.service")
    stops = journal.count("with no connection open (idle_stop_sec)")
    figure("idle stop: 12 requests 2.0-4.0 s apart", f"{result.strip()}, {stops} idle stops")
    assert '"failed": 0' in result, result
    assert stops >= 3, journal  # the later requests were served by instances started again
    assert _show(container, "ActiveState", "hello.socket") == "active"
    assert _show(container, "NRestarts") == "0"


def test_workers_idle_out_each_on_its_own(container: Container) -> None:
    install_app(container, example_spec(workers=2, idle_stop_sec=2))
    units = ["hello@1.service", "hello@2.service"]
    wait_until(
        lambda: all(_show(container, "ActiveState", unit) == "inactive" for unit in units),
        timeout=60,
        what="both instances' idle stops",
    )
    for unit in units:
        assert _show(container, "Result", unit) == "success"
        socket = unit.replace(".service", ".socket")
        assert _show(container, "SubState", socket) == "listening"
    # Each instance's own socket starts it again: a request to each (reuseport spreads new
    # connections by hash, so a handful reaches both), then each idles out again.
    for _ in range(8):
        assert curl(container, "http://127.0.0.1:8080/health")[0] == 200
    wait_until(
        lambda: (
            all(_show(container, "NRestarts", unit) == "0" for unit in units)
            and all(_show(container, "ActiveState", unit) == "inactive" for unit in units)
        ),
        timeout=60,
        what="the instances to idle out again",
    )
    assert container.journal("hello@1.service").count("(idle_stop_sec)") >= 1
