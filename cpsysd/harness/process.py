"""Processes of :mod:`cpsysd.harness.container`: commands entered into the container with
nsenter(1), the
tar stream that copies files in, and the signal handling that makes teardown happen."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import tarfile
import tempfile
import threading
from collections.abc import Callable, Iterator
from types import FrameType
from typing import IO

HANDLED_SIGNALS = (signal.SIGTERM, signal.SIGHUP)
_ARMED: set[int] = set()


class Terminated(KeyboardInterrupt):
    """SIGTERM or SIGHUP arrived while a container was up. It unwinds like Ctrl-C, through
    ``Container.__exit__`` (which tears down), and every framework treats it as "stop now":
    pytest ends the session (a SystemExit would only fail the current test), the CLI exits."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"terminated by {signal.Signals(signum).name}")
        self.signum = signum


def _raise_terminated(signum: int, frame: FrameType | None) -> None:
    raise Terminated(signum)


def arm_signals() -> None:
    """Make SIGTERM and SIGHUP unwind the stack (so ``with Container()`` tears down) instead of
    killing the interpreter, unless someone already handles them. Main thread only."""
    if threading.current_thread() is not threading.main_thread():
        return
    for signum in HANDLED_SIGNALS:
        if signum not in _ARMED and signal.getsignal(signum) == signal.SIG_DFL:
            signal.signal(signum, _raise_terminated)
            _ARMED.add(signum)


def disarm_signals() -> None:
    """Give SIGTERM and SIGHUP their default action back (when no container is left)."""
    if threading.current_thread() is not threading.main_thread():
        return
    for signum in list(_ARMED):
        if signal.getsignal(signum) is _raise_terminated:
            signal.signal(signum, signal.SIG_DFL)
        _ARMED.discard(signum)


@contextlib.contextmanager
def signals_deferred() -> Iterator[None]:
    """Hold Ctrl-C, SIGTERM and SIGHUP until the block is done; they are delivered right after
    (pthread_sigmask(3)), so teardown is never cut short."""
    old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, *HANDLED_SIGNALS})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def _process_group(pgid: int) -> list[int]:
    members = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError):
                if os.getpgid(int(entry)) == pgid:
                    members.append(int(entry))
    return members


def kill_command(proc: subprocess.Popen[str] | subprocess.Popen[bytes]) -> None:
    """Kill a command entered with nsenter, and everything it started in its process group.

    Each command runs in a session of its own. nsenter forks once to enter the pid namespace:
    killing only nsenter would leave the command running inside, and killing nsenter with it
    would leave the command a zombie for the host's init to reap. So the members of the group
    go first and nsenter reaps them; nsenter itself only if it does not exit then."""
    for _ in range(2):
        for member in _process_group(proc.pid):
            if member != proc.pid:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(member, signal.SIGKILL)
    try:
        proc.wait(timeout=2)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def capture(command: list[str], stdin: str | None, timeout: float) -> tuple[int | None, str, str]:
    """Run ``command`` in a new session, feed ``stdin``, return (status, stdout, stderr).
    On timeout the command is killed and the status is None."""
    with subprocess.Popen(
        command,
        stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        encoding="utf-8",
        errors="replace",
        start_new_session=True,
    ) as proc:
        try:
            out, err = proc.communicate(stdin, timeout=timeout)
        except subprocess.TimeoutExpired:
            kill_command(proc)
            out, err = proc.communicate()
            return None, out, err
        except BaseException:
            kill_command(proc)
            raise
    return proc.returncode, out, err


def stream_tar(
    command: list[str], fill: Callable[[tarfile.TarFile], None], timeout: float
) -> tuple[int, str]:
    """Write a tar archive (filled by ``fill``) to the stdin of ``command``, a ``tar --extract``
    inside the container; returns its exit status and error output."""
    with tempfile.TemporaryFile() as errors:
        # stderr goes to a file: a pipe nobody reads while we write could fill up and stall.
        proc = subprocess.Popen(
            command,
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=errors,
            start_new_session=True,
        )
        try:
            stream: IO[bytes] = proc.stdin  # type: ignore[assignment]
            try:
                with tarfile.open(fileobj=stream, mode="w|", format=tarfile.PAX_FORMAT) as archive:
                    fill(archive)
                stream.close()
            except BrokenPipeError:
                pass  # tar stopped reading; its exit status and message say why
            status = proc.wait(timeout=timeout)
        except BaseException:
            kill_command(proc)
            raise
        errors.seek(0)
        return status, errors.read().decode(errors="replace").strip()
