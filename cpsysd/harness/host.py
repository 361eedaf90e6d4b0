"""Host-side plumbing of :mod:`cpsysd.harness.container`: can this machine run the container, where
its
cgroup lives, recording its console, and finding and removing what a container left behind."""

from __future__ import annotations

import contextlib
import os
import select
import shutil
import signal
import threading
import time
from pathlib import Path

from cpsysd.errors import CommandError
from cpsysd.host.run import capture

BASE = Path(os.environ.get("CPSYSD_HARNESS_BASE", "/var/lib/cpsysd-harness"))
CGROUP_PREFIX = "cpsysd-harness-"
SYSTEMD = "/lib/systemd/systemd"
_TOOLS = ("unshare", "nsenter", "setpriv", "pivot_root", "tar", "getent")


def _unescape(field: str) -> str:
    # proc_pid_mountinfo(5) escapes space, tab, newline and backslash as \ooo.
    return field.encode().decode("unicode_escape") if "\\" in field else field


def mount_table() -> list[tuple[str, str]]:
    """(mount point, file system type) of every mount in this process's mount namespace."""
    table = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        fields = line.split()
        table.append((_unescape(fields[4]), fields[fields.index("-") + 1]))
    return table


def mounts_under(path: Path) -> list[str]:
    """Mount points at or below ``path`` (as seen by this process)."""
    prefix = str(path).rstrip("/")
    return [
        point for point, _ in mount_table() if point == prefix or point.startswith(prefix + "/")
    ]


def cgroup2_root() -> Path | None:
    """Where the cgroup2 hierarchy is mounted: /sys/fs/cgroup on unified hosts,
    /sys/fs/cgroup/unified on "hybrid" ones (like Debian hosts booted with cgroup v1)."""
    types = dict(mount_table())
    for candidate in ("/sys/fs/cgroup", "/sys/fs/cgroup/unified"):
        if types.get(candidate) == "cgroup2":
            return Path(candidate)
    return None


def _cgroup_of(pid: int | str) -> str | None:
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
            if line.startswith("0::"):
                return line[3:]
    return None


def own_cgroup() -> Path:
    """This process's cgroup2 directory."""
    root = cgroup2_root()
    assert root is not None
    return root / (_cgroup_of("self") or "/").lstrip("/")


def process_start_time(pid: int) -> str | None:
    """The start time of ``pid`` in clock ticks after boot (proc_pid_stat(5) field 22), which
    tells a living process from a later one that reused its PID."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]


def available() -> str | None:
    """None when this machine can run the container (root, Linux namespaces, cgroup2, overlayfs,
    systemd, util-linux); otherwise a one-line reason."""
    if not os.path.exists("/proc/self/ns/cgroup"):
        return "the systemd container needs Linux with pid, mount and cgroup namespaces"
    if os.geteuid() != 0:
        return "the systemd container needs root (it creates namespaces and mounts); run as root"
    missing = [tool for tool in _TOOLS if shutil.which(tool) is None]
    if missing:
        return f"the systemd container needs {', '.join(missing)} (apt-get install util-linux tar)"
    if not os.access(SYSTEMD, os.X_OK):
        return (
            f"the systemd container needs systemd ({SYSTEMD} is missing; apt-get install systemd)"
        )
    if cgroup2_root() is None:
        return "the systemd container needs a cgroup2 hierarchy (none is mounted)"
    # The real thing, in miniature: new namespaces, a tmpfs and an overlay of / on it. The
    # mounts are private to the probe's mount namespace and vanish with it.
    probe = (
        "mount -t tmpfs cpsysd-probe /tmp && mkdir /tmp/u /tmp/w /tmp/m && "
        "mount -t overlay cpsysd-probe -o lowerdir=/,upperdir=/tmp/u,workdir=/tmp/w /tmp/m"
    )
    argv = [
        "unshare",
        "--pid",
        "--fork",
        "--mount",
        "--uts",
        "--ipc",
        "--cgroup",
        "--net",
        "sh",
        "-c",
        probe,
    ]
    try:
        result = capture(argv, timeout=30)
    except CommandError as err:
        return f"cannot create namespaces with an overlay root here: {err.message}"
    if result.status != 0:
        why = (result.stderr.strip().splitlines() or ["unknown error"])[-1]
        why = why if result.status is not None else "unshare did not finish within 30 s"
        return f"cannot create namespaces with an overlay root here: {why}"
    return None


def remove_cgroup(path: Path, timeout: float = 5.0) -> bool:
    """Remove a cgroup and its children, waiting for dying processes to leave; True when gone."""
    deadline = time.monotonic() + timeout
    while True:
        for directory, _, _ in os.walk(path, topdown=False):
            with contextlib.suppress(OSError):
                os.rmdir(directory)
        if not path.exists():
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)


def _is_launcher(pid: int) -> bool:
    """True for a live launcher (unshare) of a container that this process started."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    parent = int(stat.rsplit(")", 1)[1].split()[1])
    return parent == os.getpid() and (
        b"/harness/init.py" in cmdline or cmdline.startswith(b"unshare")
    )


def in_container_cgroup(pid: int, name: str) -> bool:
    """True when process ``pid`` lives in container ``name``'s cgroup (or below it)."""
    path = (_cgroup_of(pid) or "").lstrip("/")
    cgroup = f"{CGROUP_PREFIX}{name}"
    return path == cgroup or path.startswith(cgroup + "/")


def leftovers_of(name: str, pid1: int, launcher: int) -> list[str]:
    """What container ``name`` (whose PID 1 and launcher had these host PIDs) left behind."""
    found = []
    cgroup = f"{CGROUP_PREFIX}{name}"
    if pid1 and in_container_cgroup(pid1, name):
        found.append(f"process {pid1} (PID 1 of {name})")
    if launcher and _is_launcher(launcher):
        found.append(f"process {launcher} (launcher of {name})")
    root = cgroup2_root()
    if root is not None and (root / cgroup).exists():
        found.append(f"cgroup {root / cgroup}")
    scratch = BASE / name
    found += [f"mount {point}" for point in mounts_under(scratch)]
    if scratch.exists():
        found.append(f"directory {scratch}")
    return found


def reap_stale() -> list[str]:
    """Remove containers whose harness process is gone (killed before it could tear down):
    kill what is left in their cgroup, remove the cgroup and the scratch directory. Containers
    of living processes, and directories being created (no owner file yet), are left alone."""
    reaped: list[str] = []
    if not BASE.is_dir():
        return reaped
    root = cgroup2_root()
    for entry in sorted(BASE.iterdir()):
        try:
            pid, started = (entry / "owner").read_text().split()
        except (OSError, ValueError):
            continue
        if process_start_time(int(pid)) == started:
            continue
        if root is not None:
            cgroup = root / f"{CGROUP_PREFIX}{entry.name}"
            for procs in cgroup.glob("**/cgroup.procs"):
                for member in procs.read_text().split():
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(int(member), signal.SIGKILL)
            if cgroup.exists() and not remove_cgroup(cgroup):
                continue
        if not mounts_under(entry):
            shutil.rmtree(entry, ignore_errors=True)
            reaped.append(entry.name)
    return reaped


class ConsoleRecorder:
    """A pseudo-terminal whose other end becomes the container's /dev/console, copied to a
    log file by a thread (systemd logs to /dev/console in a container until journald runs)."""

    def __init__(self, path: Path) -> None:
        self._master, self.terminal = os.openpty()
        self._log = path.open("ab")
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._pump, name=f"console {path}", daemon=True)
        self._thread.start()

    def started(self) -> None:
        """Close our copy of the terminal once the launcher has it, so EOF can be seen."""
        if self.terminal >= 0:
            os.close(self.terminal)
            self.terminal = -1

    def _pump(self) -> None:
        while True:
            ready, _, _ = select.select([self._master], [], [], 0.05)
            if not ready:
                if self._stop.is_set():
                    return
                continue
            try:
                data = os.read(self._master, 65536)
            except OSError:  # EIO: every process holding the terminal is gone
                return
            if not data:
                return
            with self._lock:
                self._log.write(data)
                self._log.flush()

    def flush(self) -> None:
        """Wait briefly for pending console output to reach the log."""
        time.sleep(0.1)

    def close(self) -> None:
        self.started()
        self._stop.set()
        self._thread.join(timeout=5)
        os.close(self._master)
        with self._lock:
            self._log.close()
