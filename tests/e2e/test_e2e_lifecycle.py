"""The service's lifecycle under a real systemd: restart and reload while a bounded load runs
(no failed request), stop during a slow request (it completes), and the watchdog restarting an
app whose request threads all hang."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

import pytest
from e2etools import EXAMPLE, LoadRun, curl, example_spec, install_app, wait_until

from cpsysd.harness.container import Container

pytestmark = pytest.mark.e2e


def _main_pid(box: Container) -> int:
    return int(box.run(["systemctl", "show", "-P", "MainPID", "hello.service"]).stdout)


def test_restart_and_reload_under_load_fail_no_request(
    container: Container, figure: Callable[[str, str], None]
) -> None:
    install_app(container, example_spec())
    assert curl(container, "http://127.0.0.1:8080/health")[0] == 200
    for action in ("restart", "reload"):
        before = _main_pid(container)
        load = LoadRun(container, 8080, "/health", limit=20000, seconds=60)
        container.run(["systemctl", action, "hello.service"])
        wait_until(lambda: _main_pid(container) not in (0,), what="a main process again")
        counts = load.finish()
        after = _main_pid(container)
        print(f"{action}: {counts}")
        figure(
            f"requests during systemctl {action}",
            f"{counts['ok']} served, {counts['failed']} failed",
        )
        assert counts["failed"] == 0, counts
        assert counts["ok"] > 20
        if action == "restart":
            assert after != before  # a new process served the rest
        else:
            assert after == before  # reloaded in place
    wait_until(
        lambda: "reload" in container.journal("hello.service").lower(), what="the reload logged"
    )


def test_stop_during_a_slow_request_lets_it_finish(container: Container) -> None:
    install_app(container, example_spec())
    assert curl(container, "http://127.0.0.1:8080/health")[0] == 200
    outcome: dict[str, object] = {}

    def slow_request() -> None:
        try:
            outcome["result"] = curl(container, "http://127.0.0.1:8080/slow?seconds=3")
        except BaseException as err:
            outcome["error"] = err

    worker = threading.Thread(target=slow_request)
    worker.start()
    wait_until(
        lambda: "slow request" in container.journal("hello.service"), what="the slow request"
    )
    container.run(["systemctl", "stop", "hello.socket", "hello.service"])
    worker.join(timeout=60)
    assert "error" not in outcome, outcome
    status, _, body = outcome["result"]  # type: ignore[misc]
    assert (status, body) == (200, "slept 3.0 s\n")
    assert (
        container.run(["systemctl", "is-active", "hello.service"], check=False).stdout
        == "inactive\n"
    )
    result = container.run(["systemctl", "show", "-P", "Result", "hello.service"]).stdout
    assert result == "success\n"  # exited by itself after the request, not killed at the timeout


def test_watchdog_restarts_a_hung_app(container: Container, tmp_path: Path) -> None:
    # Two request threads, both stuck in /slow: nothing answers, so cpsysd serve stops pinging
    # and systemd kills and restarts the service after WatchdogSec=.
    app = tmp_path / "hello"
    app.mkdir()
    for name in ("hello.py", "cpsysd.toml"):
        (app / name).write_text((EXAMPLE / name).read_text())
    (app / "app.conf").write_text(
        (EXAMPLE / "app.conf").read_text() + "\n[global]\nserver.thread_pool = 2\n"
    )
    install_app(container, example_spec(watchdog_sec=2), source=app)
    assert curl(container, "http://127.0.0.1:8080/health")[0] == 200
    first = _main_pid(container)
    hangs = [
        threading.Thread(
            target=container.run,
            args=(["curl", "-s", "--max-time", "40", "http://127.0.0.1:8080/slow?seconds=30"],),
            kwargs={"check": False, "timeout": 60},
        )
        for _ in range(2)
    ]
    for thread in hangs:
        thread.start()

    def restarted() -> bool:
        restarts = container.run(["systemctl", "show", "-P", "NRestarts", "hello.service"]).stdout
        return int(restarts) >= 1 and _main_pid(container) not in (0, first)

    wait_until(restarted, timeout=30, what="systemd to restart the hung service")
    wait_until(
        lambda: "Watchdog timeout" in container.journal("hello.service"),
        what="systemd's watchdog message in the journal",
    )
    assert curl(container, "http://127.0.0.1:8080/health")[0] == 200  # the new process answers
    for thread in hangs:
        thread.join(timeout=60)
