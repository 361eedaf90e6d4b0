"""The one place cpsysd starts processes (systemctl, systemd-analyze, the harness's nsenter and
tar, an app's interpreter, ...).

Every argv is logged at debug level (``cpsysd --debug`` shows them on stderr), every wait has a
timeout, and a command that cannot start, fails or times out becomes a
:class:`~cpsysd.errors.CommandError` whose message quotes the command and its stderr.
``harness/init.py`` is the one exception: it runs as a standalone script inside the container's
new namespaces, where cpsysd is not importable (tests/test_imports.py checks both).
"""

from __future__ import annotations

import contextlib
import logging
import os
import shlex
import shutil
import signal
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from cpsysd import escape
from cpsysd.errors import CommandError

log = logging.getLogger("cpsysd.command")

# The runner's vocabulary for spawn()'s streams and its result types, so no caller needs
# subprocess itself.
PIPE = subprocess.PIPE
DEVNULL = subprocess.DEVNULL
Process = subprocess.Popen
CompletedProcess = subprocess.CompletedProcess
Stream = int | IO[bytes] | IO[str] | None


@dataclass(frozen=True)
class Captured:
    """What :func:`capture` saw: the exit status (None when it was killed on timeout) and the
    output, decoded as UTF-8 with undecodable bytes replaced."""

    status: int | None
    stdout: str
    stderr: str


def _start(argv: Sequence[str], **popen: object) -> subprocess.Popen[str]:
    log.debug("running %s", shlex.join(argv))
    try:
        return subprocess.Popen(list(argv), **popen)  # type: ignore[call-overload,no-any-return]
    except OSError as err:
        raise CommandError(
            f"cannot run {argv[0]}: {err.strerror or err}",
            f"install the package that provides {Path(argv[0]).name}"
            if isinstance(err, FileNotFoundError)
            else None,
        ) from None


def spawn(
    argv: Sequence[str],
    *,
    stdin: Stream = None,
    stdout: Stream = None,
    stderr: Stream = None,
    new_session: bool = False,
) -> subprocess.Popen[bytes]:
    """Start a long-lived process (bytes streams); the caller waits for it with :func:`wait`
    and stops it with :func:`kill_group` or ``Popen.kill``."""
    return _start(  # type: ignore[return-value]
        argv, stdin=stdin, stdout=stdout, stderr=stderr, start_new_session=new_session
    )


def wait(proc: subprocess.Popen[bytes] | subprocess.Popen[str], timeout: float) -> int | None:
    """``proc``'s exit status, or None when it is still running after ``timeout`` seconds."""
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        return None


def _process_group(pgid: int) -> list[int]:
    members = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError):
                if os.getpgid(int(entry)) == pgid:
                    members.append(int(entry))
    return members


def kill_group(proc: subprocess.Popen[bytes] | subprocess.Popen[str]) -> None:
    """Kill ``proc`` (started with ``new_session``) and everything in its process group.

    The members go first and ``proc`` reaps them: a leader that forked into a pid namespace
    (nsenter does) would, if killed first, leave its child running inside, or a zombie for the
    host's init to reap. The leader itself is killed only if it does not exit then."""
    for _ in range(2):
        for member in _process_group(proc.pid):
            if member != proc.pid:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(member, signal.SIGKILL)
    if wait(proc, 2) is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def capture(
    argv: Sequence[str],
    *,
    input_text: str | None = None,
    timeout: float = 120,
    env: dict[str, str] | None = None,
    umask: int = -1,
    new_session: bool = True,
) -> Captured:
    """Run ``argv`` (no shell), feed it ``input_text``, return its status and output. On
    timeout the command and its process group are killed and the status is None; it never
    raises for the command's own failure (only when it cannot start)."""
    with _start(
        argv,
        stdin=PIPE if input_text is not None else DEVNULL,
        stdout=PIPE,
        stderr=PIPE,
        text=True,
        encoding="utf-8",
        errors="replace",
        env=env,
        umask=umask,
        start_new_session=new_session,
    ) as proc:
        try:
            out, err = proc.communicate(input_text, timeout=timeout)
        except subprocess.TimeoutExpired:
            kill_group(proc) if new_session else proc.kill()
            out, err = proc.communicate()
            return Captured(None, out, err)
        except BaseException:
            kill_group(proc) if new_session else proc.kill()
            raise
    return Captured(proc.returncode, out, err)


def run_command(
    argv: Sequence[str],
    *,
    check: bool = True,
    timeout: float = 120,
    input_text: str | None = None,
    env: dict[str, str] | None = None,
    umask: int = -1,
) -> subprocess.CompletedProcess[str]:
    """Run ``argv`` (no shell), capture its output as text, raise CommandError when it cannot
    start, times out, or (with ``check``) exits non-zero. ``umask``: the child's (-1 keeps this
    process's)."""
    cmdline = shlex.join(argv)
    if shutil.which(argv[0]) is None:
        raise CommandError(
            f"{argv[0]} not found", f"install the package that provides {Path(argv[0]).name}"
        )
    # Its own session, so a timeout kills what it started too (systemctl's pager, say).
    result = capture(argv, input_text=input_text, timeout=timeout, env=env, umask=umask)
    if result.status is None:
        raise CommandError(f"{cmdline} did not finish within {timeout:g} s")
    if check and result.status != 0:
        detail = (result.stderr or result.stdout).strip().splitlines()
        last = detail[-1] if detail else f"exit status {result.status}"
        raise CommandError(f"{cmdline} failed: {last}")
    return subprocess.CompletedProcess(list(argv), result.status, result.stdout, result.stderr)


def systemd_running() -> bool:
    """True when systemd is the init system (sd_booted(3): /run/systemd/system exists)."""
    return Path("/run/systemd/system").is_dir()


def check_installed_app(name: str, hint: str, why: str = "") -> None:
    """What every command on an installed app checks first: ``name`` is a unit name stem, and
    systemd runs here (else CommandError; ``why`` ends its message, ``hint`` says where the
    command makes sense)."""
    try:
        escape.check_unit_stem(name)
    except ValueError as err:
        raise CommandError(f"app name {name!r} {err}", "give the name of the description") from None
    if not systemd_running():
        raise CommandError(f"systemd is not running here (no /run/systemd/system){why}", hint)


def systemctl(
    *args: str, user: bool = False, check: bool = True
) -> subprocess.CompletedProcess[str]:
    """``systemctl [--user] ARGS...`` through :func:`run_command`."""
    argv = ["systemctl", *(["--user"] if user else []), *args]
    return run_command(argv, check=check)
