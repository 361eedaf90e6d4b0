"""``cpsysd try`` (the README's first command) as a user runs it: a real process, real output."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from e2etools import EXAMPLE, run_try

pytestmark = pytest.mark.e2e


def test_try_runs_the_example_under_systemd(
    container_allowed: None, figure: Callable[[str, str], None]
) -> None:
    result = run_try(EXAMPLE / "cpsysd.toml")
    assert result.returncode == 0
    out = result.stdout
    assert "first request: HTTP 200 from http://127.0.0.1:8080/" in out
    assert "Hello from cpsysd!" in out
    assert 'Status: "' in out
    assert "hello[" in out  # journal lines of the service
    assert "nothing left behind" in out
    latency = re.search(r"first request +([0-9]+) ms", out)
    exposure = re.search(r"exposure +([0-9.]+ \S+)", out)
    assert latency
    assert exposure
    figure("cpsysd try: first request (socket activation)", f"{latency.group(1)} ms")
    figure("cpsysd try: exposure", exposure.group(1))
    boot = re.search(r"boot +([0-9.]+ s)", out)
    assert boot
    figure("cpsysd try: container boot", boot.group(1))


def test_try_without_root_says_so_in_one_line() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to become another user")
    probe = ["runuser", "-u", "nobody", "--", sys.executable, "-c", "import cpsysd"]
    if subprocess.run(probe, capture_output=True, check=False).returncode != 0:
        pytest.skip(f"{sys.executable} is not usable by nobody (e.g. a checkout under /root)")
    result = subprocess.run(
        [
            "runuser",
            "-u",
            "nobody",
            "--",
            sys.executable,
            "-m",
            "cpsysd",
            "try",
            "-c",
            str(EXAMPLE / "cpsysd.toml"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode != 0
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1
    assert "needs root" in result.stderr


SLOW_START_APP = """
import time

import cherrypy


class Root:
    @cherrypy.expose
    def index(self):
        return "answered while starting\\n"


# After the servers (start priority 75) and before cpsysd's READY=1 (80): the first request is
# answered while systemd still sees the service as "activating".
cherrypy.engine.subscribe("start", lambda: time.sleep(2), priority=78)
"""


def test_try_reports_the_service_once_it_has_started(
    container_allowed: None, tmp_path: Path
) -> None:
    """The first request is answered before READY=1; try's status must not be read in between
    (it once was: "activating", no STATUS line)."""
    tmp_path.chmod(0o755)  # copied with its mode: the DynamicUser must be able to enter it
    (tmp_path / "slow.py").write_text(SLOW_START_APP)
    description = tmp_path / "cpsysd.toml"
    description.write_text('name = "slow"\nentry = "slow:Root"\nlisten = ["8080"]\n')
    result = run_try(description)
    assert result.returncode == 0
    assert "answered while starting" in result.stdout
    assert "Active: active (running)" in result.stdout
    assert 'Status: "' in result.stdout


def test_try_names_an_app_directory_the_service_cannot_enter(
    container_allowed: None, tmp_path: Path
) -> None:
    """Copied with its mode 0700, the app's directory is closed to the DynamicUser: install
    inside refuses in one line, before systemd would fail at CHDIR on the first request."""
    tmp_path.chmod(0o700)
    (tmp_path / "slow.py").write_text(SLOW_START_APP)
    description = tmp_path / "cpsysd.toml"
    description.write_text('name = "closed"\nentry = "slow:Root"\nlisten = ["8080"]\n')
    result = run_try(description)
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith(
        "cpsysd: error: cpsysd install failed inside the container: the service's DynamicUser "
        "cannot use the working directory /srv/closed (mode rwx------, owner uid 0) (let others "
    ), result.stderr
    assert "nothing left behind" in result.stdout


def test_try_with_workers_waits_for_every_instance(container_allowed: None, tmp_path: Path) -> None:
    tmp_path.chmod(0o755)
    (tmp_path / "hello.py").write_text((EXAMPLE / "hello.py").read_text())
    # RAM sessions with workers: what verify and install warn about, and so try too.
    config = (EXAMPLE / "app.conf").read_text().replace("[/]\n", "[/]\ntools.sessions.on = True\n")
    (tmp_path / "app.conf").write_text(config)
    description = tmp_path / "cpsysd.toml"
    description.write_text((EXAMPLE / "cpsysd.toml").read_text() + "workers = 2\n")
    result = run_try(description)
    assert result.returncode == 0
    warnings = [line for line in result.stderr.splitlines() if line.startswith("cpsysd: warning:")]
    assert len(warnings) == 1, result.stderr
    assert "CherryPy keeps sessions in RAM" in warnings[0]
    assert "workers = 2" in warnings[0]
    assert "Hello from cpsysd!" in result.stdout
    for unit in ("hello@1.service", "hello@2.service"):
        assert f"{unit} - " in result.stdout  # in systemctl status
    assert result.stdout.count("Active: active (running)") == 2
    assert result.stdout.count('Status: "') == 2
    assert "journal of hello@1.service, hello@2.service (first " in result.stdout
    assert "ms (the instances were started by hello.target at install)" in result.stdout


FAILING_START_APP = """
import cherrypy


class Root:
    @cherrypy.expose
    def index(self):
        return "never answered\\n"


def open_database():
    raise RuntimeError("cannot open the orders database at /nonexistent/orders.db")


# Imports cleanly (the preflight passes); fails only when the engine starts under systemd.
cherrypy.engine.subscribe("start", open_database, priority=60)
"""


def test_try_names_the_journals_cause_when_the_app_fails_to_start(
    container_allowed: None, tmp_path: Path
) -> None:
    """The last line is the app's own error from the journal, not "curl exit status 56"."""
    tmp_path.chmod(0o755)
    (tmp_path / "failing.py").write_text(FAILING_START_APP)
    description = tmp_path / "cpsysd.toml"
    description.write_text('name = "failing"\nentry = "failing:Root"\nlisten = ["8080"]\n')
    result = run_try(description)
    assert result.returncode == 1
    assert "nothing left behind" in result.stdout
    assert result.stderr.count("\n") == 1, result.stderr
    last = result.stderr.strip()
    assert last.startswith("cpsysd: error: "), last
    assert "RuntimeError: cannot open the orders database at /nonexistent/orders.db" in last, last
    assert "curl exit status" not in last.split("RuntimeError")[1], last
