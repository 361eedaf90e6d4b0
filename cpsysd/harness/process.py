"""Processes of :mod:`cpsysd.harness.container`: the tar stream that copies files in, and the
signal handling that makes teardown happen. Processes start through :mod:`cpsysd.host.run`."""

from __future__ import annotations

import contextlib
import signal
import tarfile
import tempfile
import threading
from collections.abc import Callable, Iterator
from types import FrameType
from typing import IO

from cpsysd.host.run import DEVNULL, PIPE, kill_group, spawn, wait

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


def stream_tar(
    command: list[str], fill: Callable[[tarfile.TarFile], None], timeout: float
) -> tuple[int | None, str]:
    """Write a tar archive (filled by ``fill``) to the stdin of ``command``, a ``tar --extract``
    inside the container; returns its exit status (None when it was killed after ``timeout``
    seconds) and error output."""
    with tempfile.TemporaryFile() as errors:
        # stderr goes to a file: a pipe nobody reads while we write could fill up and stall.
        proc = spawn(command, stdin=PIPE, stdout=DEVNULL, stderr=errors, new_session=True)
        try:
            stream: IO[bytes] = proc.stdin  # type: ignore[assignment]
            try:
                with tarfile.open(fileobj=stream, mode="w|", format=tarfile.PAX_FORMAT) as archive:
                    fill(archive)
                stream.close()
            except BrokenPipeError:
                pass  # tar stopped reading; its exit status and message say why
            status = wait(proc, timeout)
        except BaseException:
            kill_group(proc)
            raise
        if status is None:
            kill_group(proc)
        errors.seek(0)
        return status, errors.read().decode(errors="replace").strip()
