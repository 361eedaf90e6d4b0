"""An ephemeral systemd container: systemd 252 as PID 1 on a throw-away overlay of ``/``.

Unit files that pass ``systemd-analyze verify`` can still fail under a real systemd. Machines
whose PID 1 is not systemd can still boot one in new pid, mount, uts, ipc, cgroup and (by
default) network namespaces, on an overlay of the host's ``/`` whose writable layer is a tmpfs:
nothing the container does reaches the host's files, processes, clock, kernel knobs or network.
The stages that build the root and become systemd are in :mod:`cpsysd.harness.init`.

>>> with Container() as box:                       # boots; tears down whatever happens
...     box.run(["systemctl", "is-system-running"]).stdout
'running\\n'

This module boots and tears down. Commands, files and the journal of the running container
are in :mod:`cpsysd.harness.commands` (every command entered drops the capabilities PID 1
dropped, setpriv(1)); what the host must offer, and what a container may leave on it, in
:mod:`cpsysd.harness.host`; signals and the tar stream in :mod:`cpsysd.harness.process`,
processes start through :mod:`cpsysd.host.run`.

Teardown kills the pid namespace's PID 1 (which kills everything in it), removes the cgroup
and the scratch directory under :data:`BASE`, and checks that no mount is left; it also runs on
exceptions, Ctrl-C, SIGTERM/SIGHUP and interpreter exit, and the container dies with the harness
even on SIGKILL.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

from cpsysd.errors import HarnessError
from cpsysd.harness import init as harness_init
from cpsysd.harness.commands import ContainerCommandError, ContainerCommands
from cpsysd.harness.host import (
    BASE,
    CGROUP_PREFIX,
    ConsoleRecorder,
    available,
    cgroup2_root,
    in_container_cgroup,
    leftovers_of,
    mounts_under,
    own_cgroup,
    process_start_time,
    reap_stale,
    remove_cgroup,
)
from cpsysd.harness.process import arm_signals, disarm_signals, signals_deferred
from cpsysd.host.run import Process, spawn, wait

__all__ = ["BASE", "BootError", "Container", "ContainerCommandError", "available", "leftovers"]

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,39}")
_LIVE: set[Container] = set()
_HISTORY: list[tuple[str, int, int]] = []  # (name, pid1, launcher pid) of every boot here


class BootError(HarnessError):
    """systemd did not come up; ``console`` holds the container's console log."""

    def __init__(self, reason: str, console: str) -> None:
        super().__init__(f"{reason}\n--- container console ---\n{console.rstrip()}\n---")
        self.reason = reason
        self.console = console


def leftovers() -> list[str]:
    """What the containers booted by this process left behind (processes, mounts, cgroups,
    scratch directories), one description each; empty when teardown was complete."""
    found: list[str] = []
    for name, pid1, launcher in _HISTORY:
        found += leftovers_of(name, pid1, launcher)
    return found


@atexit.register
def _teardown_all() -> None:
    for box in list(_LIVE):
        with contextlib.suppress(HarnessError):
            box.teardown()


class Container(ContainerCommands):
    """One ephemeral systemd container. Use it as a context manager (``with Container() as
    box``), or call :meth:`boot` and, in a ``finally``, :meth:`teardown`.

    ``network``: ``"private"`` (its own network namespace with only ``lo``) or ``"host"``
    (the host's; services inside are reachable from the host, ``CAP_NET_ADMIN`` is dropped).
    ``systemd_args``: extra arguments for the container's systemd, e.g. ``--log-level=debug``.
    """

    def __init__(
        self,
        name: str | None = None,
        *,
        network: str = "private",
        boot_timeout: float = 30.0,
        systemd_args: Sequence[str] = (),
    ) -> None:
        if name is None:
            name = f"c{os.getpid()}-{secrets.token_hex(4)}"
        if not _NAME.fullmatch(name):
            raise HarnessError(
                f"container name {name!r} is invalid", "use up to 40 letters, digits, '_' and '-'"
            )
        if network not in ("private", "host"):
            raise HarnessError(f"network {network!r} is not 'private' or 'host'")
        self.name = name
        self.network = network
        self.boot_timeout = boot_timeout
        self.systemd_args = list(systemd_args)
        self.scratch = BASE / name
        self.pid1 = 0
        self.boot_seconds = 0.0
        self.boot_state = ""
        self._cgroup: Path | None = None
        self._launcher: Process[bytes] | None = None
        self._console: ConsoleRecorder | None = None
        self._console_text = ""
        self._state = "new"
        self._owns_scratch = False  # never remove what another container created
        self._identities: dict[str, tuple[int, int, str]] = {}

    def __repr__(self) -> str:
        return f"Container({self.name!r}, pid1={self.pid1}, {self._state})"

    def __enter__(self) -> Container:
        self.boot()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if value is None:
            self.teardown()
            return
        try:
            self.teardown()
        except HarnessError as err:  # keep the original failure in front
            value.add_note(f"and then: {err.one_line()}")

    # --- boot ---------------------------------------------------------------------------------

    def boot(self) -> None:
        """Boot systemd and wait until ``systemctl is-system-running --wait`` says running (or
        degraded). Raises :class:`BootError` with the console log; nothing is left behind then."""
        if self._state != "new":
            raise HarnessError(
                f"container {self.name} was already booted", "create a new Container"
            )
        reason = available()
        if reason:
            raise HarnessError(reason)
        reap_stale()
        started = time.monotonic()
        self._state = "booting"
        _LIVE.add(self)
        arm_signals()
        try:
            self._launch()
            self._wait_for_pid1(started + self.boot_timeout)
            self._wait_for_systemd(started + self.boot_timeout)
        except BaseException as err:
            failure = err if isinstance(err, BootError) else None
            self.teardown()
            if failure is None and isinstance(err, HarnessError | OSError):
                raise BootError(
                    f"container {self.name} did not boot: {err}", self._console_text
                ) from err
            raise
        self.boot_seconds = time.monotonic() - started
        self._state = "up"

    def _launch(self) -> None:
        cgroup_root = cgroup2_root()
        assert cgroup_root is not None  # checked by available()
        BASE.mkdir(mode=0o700, parents=True, exist_ok=True)
        try:
            self.scratch.mkdir(mode=0o700)
        except FileExistsError:
            raise HarnessError(
                f"{self.scratch} exists", "another container has this name; pick another"
            ) from None
        self._owns_scratch = True
        me = os.getpid()
        (self.scratch / "owner").write_text(f"{me} {process_start_time(me)}\n")
        (self.scratch / "systemd-args.json").write_text(json.dumps(self.systemd_args))
        for sub in ("root", "layers"):
            (self.scratch / sub).mkdir()
        cgroup = cgroup_root / f"{CGROUP_PREFIX}{self.name}"
        cgroup.mkdir()
        self._cgroup = cgroup
        self._console = ConsoleRecorder(self.scratch / "console.log")
        init = Path(harness_init.__file__)
        argv = [
            sys.executable,
            "-I",
            str(init),
            "launch",
            str(self.scratch),
            str(self._cgroup),
            f"cpsysd-{self.name}",
            self.network,
            str(me),
        ]
        tty = self._console.terminal
        self._launcher = spawn(argv, stdin=tty, stdout=tty, stderr=tty, new_session=True)
        self._console.started()
        (self.scratch / "launcher.pid").write_text(f"{self._launcher.pid}\n")

    def _fail(self, reason: str) -> BootError:
        if self._console:
            self._console.flush()
        return BootError(f"container {self.name} did not boot: {reason}", self.console_log())

    def _wait_for_pid1(self, deadline: float) -> None:
        launcher = self._launcher
        assert launcher is not None
        children = Path(f"/proc/{launcher.pid}/task/{launcher.pid}/children")
        while not self.pid1:
            with contextlib.suppress(OSError, ValueError, IndexError):
                self.pid1 = int(children.read_text().split()[0])
            if self.pid1:
                break
            if launcher.poll() is not None:
                raise self._fail(f"the launcher exited with status {launcher.returncode}")
            if time.monotonic() > deadline:
                raise self._fail("no PID 1 appeared")
            time.sleep(0.005)
        if os.readlink(f"/proc/{self.pid1}/ns/pid") == os.readlink("/proc/self/ns/pid"):
            raise self._fail(f"process {self.pid1} is not in a new pid namespace")
        (self.scratch / "pid1").write_text(f"{self.pid1}\n")
        _HISTORY.append((self.name, self.pid1, launcher.pid))
        # The launcher (unshare, waiting for PID 1) leaves the container's cgroup: the root of
        # the cgroup namespace must hold only systemd's own groups (cgroups(7), "no internal
        # processes").
        with contextlib.suppress(OSError):
            (own_cgroup() / "cgroup.procs").write_text(str(launcher.pid))

    def _wait_for_systemd(self, deadline: float) -> None:
        launcher = self._launcher
        assert launcher is not None
        private = Path(f"/proc/{self.pid1}/root/run/systemd/private")
        while not private.is_socket():
            if launcher.poll() is not None:
                raise self._fail("systemd exited during boot")
            if time.monotonic() > deadline:
                raise self._fail(f"systemd did not start within {self.boot_timeout:g} s")
            time.sleep(0.01)
        self._state = "booting-systemd"
        remaining = max(deadline - time.monotonic(), 1.0)
        try:
            result = self.run(
                ["systemctl", "is-system-running", "--wait"], check=False, timeout=remaining
            )
        except ContainerCommandError as err:
            raise self._fail(
                f"systemd did not finish booting within {self.boot_timeout:g} s"
            ) from err
        self.boot_state = result.stdout.strip()
        if self.boot_state not in ("running", "degraded"):
            failed = self.run(
                ["systemctl", "--failed", "--no-legend", "--plain"], check=False
            ).stdout
            raise self._fail(
                f"system state {self.boot_state!r}; failed units: {failed.strip() or 'none'}"
            )

    # --- teardown -----------------------------------------------------------------------------

    def teardown(self) -> None:
        """Kill everything in the container, remove its cgroup and scratch directory. Idempotent.
        Raises :class:`HarnessError` naming anything that could not be removed."""
        if self._state in ("new", "down"):
            self._state = "down"
            return
        with signals_deferred():
            try:
                problems = self._teardown_steps()
            finally:
                self._state = "down"
                _LIVE.discard(self)
                if not _LIVE:
                    disarm_signals()
        if problems:
            raise HarnessError(f"teardown of container {self.name} left: " + "; ".join(problems))

    def _teardown_steps(self) -> list[str]:
        problems: list[str] = []
        launcher = self._launcher
        # Only a process in this container's cgroup is ours: a PID 1 that died long ago may
        # have had its PID reused by someone else's process.
        if self.pid1 and in_container_cgroup(self.pid1, self.name):
            # SIGKILL to a pid namespace's PID 1 kills every process in it (pid_namespaces(7));
            # the kernel reaps them all before PID 1's parent learns that it died.
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid1, signal.SIGKILL)
        if launcher is not None:
            if self.pid1 == 0:
                launcher.kill()  # unshare --kill-child takes its child along
            if wait(launcher, 10) is None:
                launcher.kill()
                wait(launcher, 10)
        if self._console is not None:
            self._console.close()
        with contextlib.suppress(OSError):
            self._console_text = self._read_console()
        if self._cgroup is not None and not remove_cgroup(self._cgroup):
            problems.append(f"cgroup {self._cgroup}")
        mounts = mounts_under(self.scratch)
        if not self._owns_scratch:
            pass
        elif mounts:
            problems.append("mounts " + ", ".join(mounts))
        elif self.scratch.exists():
            shutil.rmtree(self.scratch, ignore_errors=True)
            if self.scratch.exists():
                problems.append(f"directory {self.scratch}")
        return problems

    # --- console --------------------------------------------------------------------------------

    def _read_console(self) -> str:
        raw = (self.scratch / "console.log").read_bytes().decode(errors="replace")
        return re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", raw).replace("\r", "")

    def console_log(self) -> str:
        """What systemd wrote to the container's console (also after teardown)."""
        if self._state == "down" or not self.scratch.exists():
            return self._console_text
        with contextlib.suppress(OSError):
            return self._read_console()
        return self._console_text
