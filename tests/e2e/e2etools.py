"""Helpers shared by the end-to-end tests (imported as ``e2etools``; pytest puts this directory
on sys.path for the test modules here)."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from cpsysd.description.load import AppSpec, load_spec
from cpsysd.description.toml import spec_to_toml
from cpsysd.harness.container import Container
from cpsysd.harness.provision import provision

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "hello"
SYSTEM_PYTHON = "/usr/bin/python3"


def run_try(description: Path, *options: str) -> subprocess.CompletedProcess[str]:
    """``cpsysd try -c DESCRIPTION [OPTIONS]`` as a user runs it, from the checkout; its output
    is printed (pytest shows it for a failing test)."""
    result = subprocess.run(
        [sys.executable, "-m", "cpsysd", "try", "-c", str(description), *options],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO,
        check=False,
    )
    print(result.stdout, result.stderr)
    return result


def wait_until(predicate: Callable[[], bool], timeout: float = 20.0, what: str = "it") -> None:
    """Poll ``predicate`` until it is true; fail the test after ``timeout`` seconds. The bound
    only keeps a broken run from hanging: tests never assert timings."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.05)


def example_spec(**changes: Any) -> AppSpec:
    """The example app's description (examples/hello/cpsysd.toml) with ``changes`` applied."""
    return dataclasses.replace(load_spec(EXAMPLE / "cpsysd.toml"), **changes)


def prepare_app(
    box: Container, spec: AppSpec, *, source: Path = EXAMPLE, user: str | None = None
) -> list[str]:
    """Provision cpsysd, copy ``source`` to /srv/NAME and write ``spec``, rewritten for the
    container, to /etc/cpsysd/NAME.toml; returns the ``cpsysd install`` argv to run inside
    (as ``user``, with ``--user``, when given)."""
    python = provision(box)
    workdir = f"/srv/{spec.name}"
    box.copy_in(source, workdir, exclude=["__pycache__"])
    config = f"{workdir}/{Path(spec.config).name}" if spec.config else None
    inside = dataclasses.replace(spec, python=python, working_directory=workdir, config=config)
    description = f"/etc/cpsysd/{spec.name}.toml"
    box.write_file(description, spec_to_toml(inside))
    install = [python, "-m", "cpsysd", "install", spec.name, "-c", description]
    if user is not None:
        box.run(["chmod", "-R", "a+rX", "/etc/cpsysd", workdir])
        install.append("--user")
    return install


def install_app(
    box: Container, spec: AppSpec, *, source: Path = EXAMPLE, user: str | None = None
) -> str:
    """:func:`prepare_app`, then ``cpsysd install`` inside; returns the interpreter inside."""
    install = prepare_app(box, spec, source=source, user=user)
    box.run(install, user=user)
    return install[0]


def greetings(box: Container, count: int = 40) -> set[str]:
    """The first word of ``count`` answers of ``/``, each on a new connection."""
    script = (
        "import http.client\n"
        "seen = set()\n"
        f"for _ in range({count}):\n"
        "    c = http.client.HTTPConnection('127.0.0.1', 8080, timeout=30)\n"
        "    c.request('GET', '/'); seen.add(c.getresponse().read().decode().split()[0])\n"
        "    c.close()\n"
        "print(' '.join(sorted(seen)))\n"
    )
    return set(box.run(["/usr/bin/python3", "-c", script]).stdout.split())


def curl(box: Container, url: str, *args: str, user: str | None = None) -> tuple[int, float, str]:
    """One request from inside the container: (HTTP status, total seconds, body)."""
    argv = ["curl", "--silent", "--show-error", "--max-time", "60", "--output", "/dev/stderr"]
    result = box.run([*argv, "--write-out", "%{http_code} %{time_total}", *args, url], user=user)
    status, seconds = result.stdout.split()
    return int(status), float(seconds), result.stderr


# A small HTTP client that runs inside the container with Debian's python3: one new connection
# per request (what a browser or a proxy without keep-alive does), bounded by a request count and
# a time limit, until the test asks it to stop by creating a file.
LOAD_CLIENT = r"""
import http.client, json, os, sys, time
host, port, path, limit, seconds, stop_file, ready_file = sys.argv[1:8]
port, limit, deadline = int(port), int(limit), time.monotonic() + float(seconds)
ok = failed = after_stop = 0
errors = []
while ok + failed < limit and time.monotonic() < deadline and after_stop < 50:
    try:
        conn = http.client.HTTPConnection(host, port, timeout=30)
        conn.request("GET", path, headers={"Connection": "close"})
        response = conn.getresponse()
        body = response.read()
        conn.close()
        if response.status == 200:
            ok += 1
        else:
            failed += 1
            errors.append(f"HTTP {response.status}")
    except Exception as err:
        failed += 1
        errors.append(f"{type(err).__name__}: {err}")
    if ok == 20:
        open(ready_file, "w").close()
    if os.path.exists(stop_file):
        after_stop += 1
print(json.dumps({"ok": ok, "failed": failed, "errors": errors[:5]}))
"""


class LoadRun:
    """:data:`LOAD_CLIENT` running inside ``box`` in a thread, until :meth:`finish`."""

    def __init__(
        self, box: Container, port: int, path: str = "/", limit: int = 20000, seconds: float = 60
    ) -> None:
        self.box = box
        tag = f"{time.monotonic_ns()}"
        self.stop_file, self.ready_file = f"/run/load-stop-{tag}", f"/run/load-ready-{tag}"
        argv = [
            SYSTEM_PYTHON,
            "-c",
            LOAD_CLIENT,
            "127.0.0.1",
            str(port),
            path,
            str(limit),
            str(seconds),
            self.stop_file,
            self.ready_file,
        ]
        self.result: dict[str, Any] = {}
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(argv, seconds + 30), daemon=True)
        self._thread.start()
        wait_until(self._ready, what="the load client's first 20 answers")

    def _ready(self) -> bool:
        if not self._thread.is_alive():
            raise AssertionError(f"the load client stopped early: {self._error or self.result}")
        return self.box.run(["test", "-e", self.ready_file], check=False).returncode == 0

    def _run(self, argv: list[str], timeout: float) -> None:
        try:
            self.result = json.loads(self.box.run(argv, timeout=timeout).stdout)
        except BaseException as err:  # reported by finish()
            self._error = err

    def finish(self) -> dict[str, Any]:
        """Let the client make a few more requests, stop it, return its counts."""
        self.box.run(["touch", self.stop_file])
        self._thread.join(timeout=120)
        if self._error is not None:
            raise self._error
        return self.result
