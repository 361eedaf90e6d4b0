"""The two stages of :mod:`cpsysd.harness.container` that run inside the container's new namespaces.

The harness runs this file as a script (``python -I harness/init.py STAGE ...``) because these
stages live between two worlds: the ``launch`` stage runs on the host, the ``pid1`` stage is the
first process of a fresh pid namespace that builds the container's root and becomes systemd.
Only the standard library is used; nothing here is imported by the rest of cpsysd.

``launch SCRATCH CGROUP HOSTNAME NETWORK PARENT``
    Arms PR_SET_PDEATHSIG (if the harness dies, so does the container), moves itself into the
    container's cgroup (which becomes the root of the new cgroup namespace) and executes
    unshare(1), whose child runs the ``pid1`` stage.
``pid1 SCRATCH HOSTNAME NETWORK HOST_MNT_NS``
    Refuses to run unless it is PID 1 of a new pid namespace in a new mount namespace. Mounts an
    overlay of the host's ``/`` whose writable layer is a tmpfs, fresh API file systems (kernel
    knobs read-only), masks host services, switches root with pivot_root(2), makes ``/`` shared,
    drops host-dangerous capabilities from the bounding set and executes systemd (with the
    extra arguments listed in ``SCRATCH/systemd-args.json``).
"""

from __future__ import annotations

import ctypes
import functools
import json
import os
import signal
import stat
import subprocess
import sys
import uuid
from pathlib import Path

# <sys/mount.h>, <sys/prctl.h>
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
MS_REMOUNT, MS_BIND, MS_REC, MS_SHARED = 32, 4096, 16384, 1 << 20
MNT_DETACH = 2
PR_CAPBSET_DROP, PR_SET_PDEATHSIG = 24, 1

# Capabilities no container may keep (the set systemd-nspawn drops too): the host's clock,
# kernel modules, raw I/O, the kernel log, wake alarms, MAC policy, process accounting.
# Numbers from <linux/capability.h>; the names are setpriv(1)'s.
DROPPED_CAPABILITIES = {
    "sys_module": 16,
    "sys_rawio": 17,
    "sys_pacct": 20,
    "sys_time": 25,
    "mac_override": 32,
    "mac_admin": 33,
    "syslog": 34,
    "wake_alarm": 35,
    "block_suspend": 36,
}
NET_ADMIN = ("net_admin", 12)  # dropped too when the container shares the host's network

# Units that must never start in the container: host services, the clock, kernel knobs,
# consoles, devices, timers of the host. Everything the host enabled is masked as well.
MASKED_UNITS = (
    "getty.target",
    "getty@.service",
    "console-getty.service",
    "container-getty@.service",
    "systemd-ask-password-console.path",
    "systemd-ask-password-wall.path",
    "systemd-timesyncd.service",
    "systemd-sysctl.service",
    "systemd-modules-load.service",
    "systemd-binfmt.service",
    "proc-sys-fs-binfmt_misc.automount",
    "proc-sys-fs-binfmt_misc.mount",
    "sys-kernel-config.mount",
    "sys-kernel-debug.mount",
    "sys-kernel-tracing.mount",
    "sys-fs-fuse-connections.mount",
    "dev-hugepages.mount",
    "kmod-static-nodes.service",
    "systemd-pstore.service",
    "systemd-journald-audit.socket",
    "systemd-firstboot.service",
    "systemd-repart.service",
    "systemd-pcrphase.service",
    "systemd-pcrphase-sysinit.service",
    "systemd-machine-id-commit.service",
    "systemd-random-seed.service",
    "systemd-hwdb-update.service",
    "systemd-remount-fs.service",
    "ldconfig.service",
    "systemd-update-utmp.service",
    "systemd-tmpfiles-clean.timer",
    "cryptsetup.target",
    "veritysetup.target",
    "integritysetup.target",
    "swap.target",
    "remote-fs.target",
    "postgresql.service",
    "nginx.service",
)
BOOT_TARGET = "cpsysd-harness.target"
CONTAINER_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
SYSTEMD = "/lib/systemd/systemd"


@functools.cache
def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def _check(result: int, what: str) -> None:
    if result != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"{what}: {os.strerror(errno)}")


def mount(
    source: str | None,
    target: str | Path,
    fstype: str | None,
    flags: int = 0,
    data: str | None = None,
) -> None:
    """mount(2), raising OSError that names the target."""
    enc = [None if s is None else str(s).encode() for s in (source, target, fstype, data)]
    libc = _libc()
    libc.mount.argtypes = [
        ctypes.c_char_p,
        ctypes.c_char_p,
        ctypes.c_char_p,
        ctypes.c_ulong,
        ctypes.c_char_p,
    ]
    _check(libc.mount(enc[0], enc[1], enc[2], flags, enc[3]), f"mount {target}")


def prctl(option: int, arg: int) -> None:
    libc = _libc()
    libc.prctl.argtypes = [
        ctypes.c_int,
        ctypes.c_ulong,
        ctypes.c_ulong,
        ctypes.c_ulong,
        ctypes.c_ulong,
    ]
    _check(libc.prctl(option, arg, 0, 0, 0), f"prctl {option}")


# --- stage 1: on the host ------------------------------------------------------------------


def launch(scratch: str, cgroup: str, hostname: str, network: str, parent: int) -> None:
    # If the harness process is killed (even with SIGKILL), we die, and unshare --kill-child
    # takes the container's PID 1, hence every process in it, along (prctl(2)). The parent
    # check closes the race of a parent that died before the prctl.
    prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:
        sys.exit("cpsysd-harness: the harness process is gone")
    # Join the container's cgroup before unsharing: it becomes the root of the cgroup namespace,
    # so systemd sees (and manages) only that subtree (cgroup_namespaces(7)).
    Path(cgroup, "cgroup.procs").write_text(str(os.getpid()))
    flags = [
        "--pid",
        "--fork",
        "--kill-child",
        "--mount",
        "--propagation",
        "private",
        "--uts",
        "--ipc",
        "--cgroup",
    ]
    if network == "private":
        flags.append("--net")
    mnt_ns = os.readlink("/proc/self/ns/mnt")
    os.execvp(  # noqa: S606 - replacing this process is the point
        "unshare",
        [
            "unshare",
            *flags,
            "--",
            sys.executable,
            "-I",
            __file__,
            "pid1",
            scratch,
            hostname,
            network,
            mnt_ns,
        ],
    )


# --- stage 2: PID 1 of the new namespaces ----------------------------------------------------


def _api_filesystems(root: Path) -> None:
    # A fresh proc for the new pid namespace; its kernel knobs read-only (ProtectKernelTunables
    # in spirit: the container must not change the host's sysctls or trigger sysrq).
    mount("proc", root / "proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    for knob in ("sys", "sysrq-trigger"):
        path = root / "proc" / knob
        if path.exists():
            mount(str(path), path, None, MS_BIND)
            mount(None, path, None, MS_REMOUNT | MS_BIND | MS_RDONLY)
    mount("sysfs", root / "sys", "sysfs", MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC)
    # The cgroup namespace's root (the harness's cgroup for this container) as a fresh cgroup2.
    mount("cgroup2", root / "sys/fs/cgroup", "cgroup2", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    dev = root / "dev"
    mount("cpsysd-dev", dev, "tmpfs", MS_NOSUID, "mode=755,size=1m")
    for name, major, minor in (
        ("null", 1, 3),
        ("zero", 1, 5),
        ("full", 1, 7),
        ("random", 1, 8),
        ("urandom", 1, 9),
        ("tty", 5, 0),
        ("fuse", 10, 229),
    ):
        os.mknod(dev / name, 0o666 | stat.S_IFCHR, os.makedev(major, minor))
        os.chmod(dev / name, 0o666)  # noqa: S103 - like the host's /dev/null
    for sub in ("pts", "shm", "mqueue"):
        (dev / sub).mkdir()
    mount(
        "devpts",
        dev / "pts",
        "devpts",
        MS_NOSUID | MS_NOEXEC,
        "newinstance,ptmxmode=0666,mode=620,gid=5",
    )
    mount("shm", dev / "shm", "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777")
    for link, target in (
        ("ptmx", "pts/ptmx"),
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
    ):
        (dev / link).symlink_to(target)
    # systemd logs to /dev/console in a container: hand in the harness's pty, which it records.
    (dev / "console").touch()
    mount(os.ttyname(0), dev / "console", None, MS_BIND)
    mount("cpsysd-run", root / "run", "tmpfs", MS_NOSUID | MS_NODEV, "mode=755,size=256m")
    # A private /tmp: systemd-tmpfiles would otherwise whiteout the host's /tmp in the overlay.
    mount("cpsysd-tmp", root / "tmp", "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777,size=1g")


def _mask(unit_dir: Path, names: set[str]) -> None:
    for name in sorted(names):
        path = unit_dir / name
        if path.is_dir() and not path.is_symlink():
            continue
        path.unlink(missing_ok=True)
        path.symlink_to("/dev/null")


def _enabled_by_host(unit_dir: Path) -> set[str]:
    """Every unit the host enabled or aliased in ``unit_dir`` (its *.wants links and aliases)."""
    names = {entry.name for entry in unit_dir.glob("*.wants/*")}
    names |= {entry.name for entry in unit_dir.glob("*.requires/*")}
    names |= {entry.name for entry in unit_dir.iterdir() if entry.is_symlink()}
    units = (".service", ".socket", ".timer", ".path", ".mount", ".automount", ".target")
    return {name for name in names if name.endswith(units) and name != "default.target"}


def _configure(root: Path, hostname: str) -> None:
    etc = root / "etc"
    system = etc / "systemd/system"
    _mask(system, set(MASKED_UNITS) | _enabled_by_host(system))
    user = etc / "systemd/user"
    if user.is_dir():
        _mask(user, _enabled_by_host(user))
    (system / BOOT_TARGET).write_text(
        "[Unit]\nDescription=cpsysd harness: the basic system, nothing of the host's\n"
        "Requires=basic.target\nAfter=basic.target\nAllowIsolate=yes\n"
    )
    for conf, text in (
        # Journal in /run (tmpfs), never rate-limited: tests read every line.
        ("journald.conf.d", "[Journal]\nStorage=volatile\nRateLimitBurst=0\n"),
        # Short stop timeouts: a test's teardown never waits 90 s for a stuck unit.
        ("system.conf.d", "[Manager]\nDefaultTimeoutStopSec=5s\nDefaultTimeoutStartSec=30s\n"),
    ):
        (etc / "systemd" / conf).mkdir(parents=True, exist_ok=True)
        (etc / "systemd" / conf / "cpsysd-harness.conf").write_text(text)
    # An identity of its own: a journal of its own, no clash with the host's machine-id.
    (etc / "machine-id").write_text(uuid.uuid4().hex + "\n")
    (etc / "hostname").write_text(hostname + "\n")
    (etc / "mtab").unlink(missing_ok=True)
    (etc / "mtab").symlink_to("../proc/self/mounts")


def _root_fstype() -> str:
    """The file system type mounted at ``/`` (proc_pid_mountinfo(5)), the last one stacked."""
    fstype = ""
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        fields = line.split()
        if fields[4] == "/":
            fstype = fields[fields.index("-") + 1]
    return fstype


def pid1(scratch: str, hostname: str, network: str, host_mnt_ns: str) -> None:
    # The hard safety rule: systemd never boots with the host's root. Refuse unless this
    # process is the first of a new pid namespace and the mount namespace is not the host's.
    if os.getpid() != 1 or os.readlink("/proc/self/ns/mnt") == host_mnt_ns:
        sys.exit("cpsysd-harness: pid1 stage outside its own pid and mount namespaces, refusing")
    os.umask(0o022)
    base = Path(scratch)
    extra = json.loads((base / "systemd-args.json").read_text())
    root, layers = base / "root", base / "layers"
    # The container's writable layer is RAM: nothing it writes reaches the host's disk.
    mount("cpsysd-layers", layers, "tmpfs", 0, "mode=755,size=4g")
    (layers / "upper").mkdir()
    (layers / "work").mkdir()
    mount(
        "cpsysd-root",
        root,
        "overlay",
        0,
        f"lowerdir=/,upperdir={layers}/upper,workdir={layers}/work",
    )
    _api_filesystems(root)
    _configure(root, hostname)
    os.chdir(root)
    Path(".cpsysd-oldroot").mkdir()
    subprocess.run(["pivot_root", ".", ".cpsysd-oldroot"], check=True)
    _check(_libc().umount2(b"/.cpsysd-oldroot", MNT_DETACH), "umount old root")
    os.rmdir("/.cpsysd-oldroot")
    if _root_fstype() != "overlay":
        sys.exit("cpsysd-harness: / is not the overlay after pivot_root, refusing")
    # systemd leaves / private inside containers; LoadCredential= (and other per-service
    # mounts) then silently see an empty directory. Shared propagation stays inside this
    # mount namespace: the host's mounts were made private by unshare.
    mount(None, "/", None, MS_REC | MS_SHARED)
    caps = dict(DROPPED_CAPABILITIES)
    if network == "host":
        caps[NET_ADMIN[0]] = NET_ADMIN[1]
    for number in caps.values():
        prctl(PR_CAPBSET_DROP, number)
    env = {"container": "cpsysd-harness", "PATH": CONTAINER_PATH, "LANG": "C.UTF-8", "TERM": "dumb"}
    argv = [SYSTEMD, f"--unit={BOOT_TARGET}", "--show-status=no", "--log-color=no", *extra]
    os.execve(SYSTEMD, argv, env)  # noqa: S606 - this process becomes systemd


def main(argv: list[str]) -> None:
    stage, args = argv[0], argv[1:]
    try:
        if stage == "launch":
            launch(args[0], args[1], args[2], args[3], int(args[4]))
        elif stage == "pid1":
            pid1(*args)
        else:
            sys.exit(f"cpsysd-harness: unknown stage {stage!r}")
    except (OSError, subprocess.CalledProcessError) as err:
        sys.exit(f"cpsysd-harness: {stage}: {err}")


if __name__ == "__main__":
    main(sys.argv[1:])
