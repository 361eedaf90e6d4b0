"""cpsysd.host.run, the one process runner: real processes, real timeouts, real process groups."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cpsysd.errors import CommandError
from cpsysd.host.run import DEVNULL, PIPE, capture, kill_group, run_command, spawn, wait
from tests.conftest import EXAMPLE


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat").read_text()
    return stat.rpartition(")")[2].split()[0] != "Z"


def test_run_command_quotes_the_command_and_its_last_stderr_line() -> None:
    with pytest.raises(CommandError) as caught:
        run_command(["sh", "-c", "echo first >&2; echo 'the reason' >&2; exit 3"])
    assert (
        caught.value.message
        == "sh -c 'echo first >&2; echo '\"'\"'the reason'\"'\"' >&2; exit 3' failed: the reason"
    )
    assert run_command(["sh", "-c", "exit 3"], check=False).returncode == 3
    assert run_command(["cat"], input_text="fed\n").stdout == "fed\n"


def test_a_missing_program_is_one_error_with_a_hint() -> None:
    with pytest.raises(CommandError) as caught:
        run_command(["cpsysd-no-such-program"])
    assert "cpsysd-no-such-program" in (caught.value.hint or "")
    with pytest.raises(CommandError, match="cannot run /nonexistent/tool"):
        capture(["/nonexistent/tool"])


def test_a_timeout_kills_the_command_and_what_it_started(tmp_path: Path) -> None:
    """The shell's background child is in the command's session: a timeout takes it too."""
    pidfile = tmp_path / "child.pid"
    started = time.monotonic()
    with pytest.raises(CommandError, match=r"did not finish within 0\.5 s"):
        run_command(["sh", "-c", f"sleep 60 & echo $! > {pidfile}; wait"], timeout=0.5)
    assert time.monotonic() - started < 10
    assert not _alive(int(pidfile.read_text()))


def test_capture_reports_a_timeout_as_no_status() -> None:
    result = capture(["sh", "-c", "echo partial; exec sleep 60"], timeout=0.5)
    assert (result.status, result.stdout) == (None, "partial\n")


def test_spawn_wait_and_kill_group(tmp_path: Path) -> None:
    pidfile = tmp_path / "child.pid"
    proc = spawn(
        ["sh", "-c", f"sleep 60 & echo $! > {pidfile}; wait"],
        stdin=DEVNULL,
        stdout=PIPE,
        new_session=True,
    )
    try:
        assert wait(proc, 0.2) is None  # still running
        deadline = time.monotonic() + 10
        while not pidfile.exists() or not pidfile.read_text().strip():
            assert time.monotonic() < deadline
            time.sleep(0.01)
        child = int(pidfile.read_text())
    finally:
        kill_group(proc)
        assert proc.stdout is not None
        proc.stdout.close()
    assert proc.returncode is not None
    assert not _alive(child)


def test_every_command_is_logged_at_debug(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG, logger="cpsysd.command"):
        run_command(["true", "an argument"])
    assert "running true 'an argument'" in caplog.messages


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="needs systemd-analyze")
def test_the_cli_shows_commands_with_debug() -> None:
    argv = [sys.executable, "-m", "cpsysd", "verify", "-c", str(EXAMPLE / "cpsysd.toml")]
    quiet = subprocess.run(argv, capture_output=True, text=True, check=False)
    loud = subprocess.run([*argv, "--debug"], capture_output=True, text=True, check=False)
    assert quiet.returncode == loud.returncode == 0, loud.stderr
    assert "cpsysd: debug: running systemd-analyze verify" in loud.stderr
    assert "debug" not in quiet.stderr
