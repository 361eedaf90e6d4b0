"""Hosts without systemd: ``--daemon``, ``--pidfile`` and ``--user/--group`` through CherryPy's
own Daemonizer, PIDFile and DropPrivileges plugins."""

from __future__ import annotations

import os
import pwd
import signal
import subprocess
from pathlib import Path

import pytest
from runtimekit import CPSYSD, free_port, get_json, wait_for, write_app

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root")


def _uids(pid: int) -> list[int]:
    line = next(
        x for x in Path(f"/proc/{pid}/status").read_text().splitlines() if x.startswith("Uid:")
    )
    return [int(value) for value in line.split()[1:]]


def test_daemon_with_pidfile(tmp_path: Path) -> None:
    port = free_port()
    description = write_app(tmp_path / "app", [str(port)])
    pidfile = tmp_path / "app.pid"
    env = {k: v for k, v in os.environ.items() if k not in ("INVOCATION_ID", "NOTIFY_SOCKET")}
    started = subprocess.run(  # a relative --pidfile: relative to where cpsysd was started
        [*CPSYSD, "serve", "-c", str(description), "--daemon", "--pidfile", pidfile.name],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        timeout=60,
    )
    assert started.returncode == 0, started.stderr  # the foreground process returns at once
    pid = int(wait_for(lambda: pidfile.exists() and pidfile.read_text().strip(), what="pid file"))
    try:
        seen = get_json(f"127.0.0.1:{port}")
        assert seen["pid"] == pid
        assert seen["ip"] == "127.0.0.1"
        assert os.getsid(pid) != os.getsid(0)  # detached into a session of its own
    finally:
        os.kill(pid, signal.SIGTERM)
    wait_for(lambda: not pidfile.exists(), what="pid file removal at exit")


@needs_root
def test_user_and_group_dropped_after_binding(tmp_path: Path) -> None:
    nobody = pwd.getpwnam("nobody")
    port = free_port()
    description = write_app(tmp_path / "app", [str(port)])
    tmp_path.chmod(0o755)
    proc = subprocess.Popen(
        [*CPSYSD, "serve", "-c", str(description), "--user", "nobody", "--group", "nogroup"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        seen = get_json(f"127.0.0.1:{port}")
        assert seen["pid"] == proc.pid
        # DropPrivileges runs right after the servers start (priority 77 > 75).
        wait_for(lambda: _uids(proc.pid) == [nobody.pw_uid] * 4, what="uid nobody")
        assert get_json(f"127.0.0.1:{port}")["pid"] == proc.pid
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)


def test_unknown_user_is_one_line(tmp_path: Path) -> None:
    description = write_app(tmp_path / "app", [str(free_port())])
    result = subprocess.run(
        [*CPSYSD, "serve", "-c", str(description), "--user", "no-such-user-here"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    if os.geteuid() == 0:
        assert "cpsysd: error: no such user or group: " in result.stderr
    assert "Traceback" not in result.stderr
