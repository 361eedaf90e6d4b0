"""Fixtures shared by every test module.

Tests use real components (sockets, systemd-socket-activate, systemd-analyze, systemd in the
ephemeral container, nginx, openssl, curl); ports are always free ephemeral ones, never fixed.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "examples" / "hello"


def free_port(family: int = socket.AF_INET) -> int:
    """A TCP port nobody listens on right now (bound to port 0, then released)."""
    host = "::1" if family == socket.AF_INET6 else "127.0.0.1"
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def port() -> int:
    return free_port()


@pytest.fixture(autouse=True)
def _isolated_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """No test sees the socket-activation or notify variables of whoever runs the suite."""
    for var in (
        "LISTEN_PID",
        "LISTEN_FDS",
        "LISTEN_FDNAMES",
        "NOTIFY_SOCKET",
        "WATCHDOG_USEC",
        "WATCHDOG_PID",
        "CREDENTIALS_DIRECTORY",
        "INVOCATION_ID",
        "JOURNAL_STREAM",
        "CPSYSD_DEBUG",
    ):
        monkeypatch.delenv(var, raising=False)


@pytest.fixture
def python() -> str:
    """The interpreter of this test run (the project's .venv), for subprocesses."""
    return sys.executable


@pytest.fixture
def cpsysd_cmd() -> list[str]:
    """argv prefix that runs this checkout's cpsysd as a real process."""
    return [sys.executable, "-m", "cpsysd"]


def needs_root() -> pytest.MarkDecorator:
    return pytest.mark.skipif(os.geteuid() != 0, reason="needs root")


def run_with_private_unit_dirs(argv: Sequence[str]) -> subprocess.CompletedProcess[str]:
    """Run ``argv`` (a ``cpsysd install ...``) in a mount namespace of its own with empty tmpfs
    over /etc/systemd/system and /var/lib, so even a broken check cannot write to this machine.
    Its stdout is ``rc=N`` and then every file found in those two directories afterwards."""
    script = (
        "mount -t tmpfs cpsysd-test /etc/systemd/system && mount -t tmpfs cpsysd-test /var/lib"
        ' && { "$@"; echo "rc=$?"; find /etc/systemd/system /var/lib -mindepth 1; }'
    )
    return subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh", *argv],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
