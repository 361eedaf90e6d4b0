"""The ephemeral systemd container (cpsysd.harness.container): boot, commands, files, journal, and
above all
teardown, which must leave no process, mount, cgroup or scratch directory, whatever happens.

Needs root: skipped otherwise. As root (CI), a machine that cannot run the container fails.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from cpsysd.errors import HarnessError
from cpsysd.harness import container as harness
from cpsysd.harness.container import BootError, Container, ContainerCommandError
from cpsysd.harness.host import CGROUP_PREFIX, cgroup2_root, mounts_under, reap_stale
from cpsysd.harness.provision import provision

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(os.geteuid() != 0, reason="the systemd container needs root"),
]


@pytest.fixture(autouse=True)
def _harness_usable() -> None:
    reason = harness.available()
    if reason:
        pytest.fail(f"running as root, but the systemd container is unusable: {reason}")


def _gone(name: str, pid1: int) -> list[str]:
    """Independent of harness.leftovers(): look at the machine directly."""
    left = []
    if os.path.exists(f"/proc/{pid1}") and os.readlink(f"/proc/{pid1}/ns/pid") != os.readlink(
        "/proc/self/ns/pid"
    ):
        left.append(f"process {pid1}")
    root = cgroup2_root()
    assert root is not None
    if (root / f"{CGROUP_PREFIX}{name}").exists():
        left.append("cgroup")
    scratch = harness.BASE / name
    if scratch.exists():
        left.append("scratch directory")
    mounts = [
        line
        for line in Path("/proc/self/mountinfo").read_text().splitlines()
        if str(scratch) in line
    ]
    left += mounts
    return left


def _bounding_set(status: str) -> int:
    line = next(line for line in status.splitlines() if line.startswith("CapBnd:"))
    return int(line.split()[1], 16)


def test_boots_runs_commands_and_leaves_nothing() -> None:
    with Container() as box:
        name, pid1 = box.name, box.pid1
        assert box.boot_state in ("running", "degraded")
        assert box.boot_seconds > 0
        print(f"boot {box.boot_seconds:.2f} s")
        assert box.run(["cat", "/proc/1/comm"]).stdout == "systemd\n"
        assert box.run(["hostname"]).stdout.strip() == f"cpsysd-{name}"
        assert box.run(["findmnt", "-n", "-o", "FSTYPE", "/"]).stdout.strip() == "overlay"
        # Commands inside lose what PID 1 lost: clock, modules, raw I/O (bits 25, 16, 17).
        for status in (box.read_file("/proc/1/status"), box.read_file("/proc/self/status")):
            assert _bounding_set(status) & (1 << 25 | 1 << 16 | 1 << 17) == 0
        # Its own network namespace: only lo.
        links = box.run(["ip", "-o", "link"]).stdout
        assert [line.split(":")[1].strip() for line in links.splitlines()] == ["lo"]
        assert box.run(["sh", "-c", "exit 3"], check=False).returncode == 3
        assert box.run(["cat"], input="through stdin").stdout == "through stdin"
        assert box.sh("echo $FOO", env={"FOO": "bar"}).stdout == "bar\n"
        # Files it writes stay inside: the host's /etc is untouched.
        box.write_file("/etc/cpsysd-harness-test", "inside only\n", mode=0o600)
        assert box.read_file("/etc/cpsysd-harness-test") == "inside only\n"
        assert box.run(["stat", "-c", "%a %U", "/etc/cpsysd-harness-test"]).stdout == "600 root\n"
        assert not Path("/etc/cpsysd-harness-test").exists()
    assert _gone(name, pid1) == []
    assert harness.leftovers() == []
    assert box.console_log().startswith("systemd 252")
    box.teardown()  # idempotent


def test_failing_command_reports_its_output() -> None:
    with Container() as box:
        with pytest.raises(ContainerCommandError) as caught:
            box.sh("echo partial; echo 'it went wrong' >&2; exit 7")
        assert caught.value.returncode == 7
        assert caught.value.stdout == "partial\n"
        assert "it went wrong" in str(caught.value)


def test_timeout_kills_the_command_inside() -> None:
    with Container() as box:
        with pytest.raises(ContainerCommandError, match="timed out"):
            box.run(["sleep", "60"], timeout=0.5)
        # nsenter forks into the pid namespace; the whole process group was killed, not just it.
        # pgrep also sees a killed sleep until the container's systemd has reaped it: poll (the
        # bound only keeps a regression from hanging).
        deadline = time.monotonic() + 10
        while box.run(["pgrep", "-x", "sleep"], check=False).returncode != 1:
            assert time.monotonic() < deadline, "sleep still runs in the container"
            time.sleep(0.1)


def test_journal_and_units(tmp_path: Path) -> None:
    with Container() as box:
        token = f"harness-token-{os.getpid()}"
        box.run(
            [
                "systemd-run",
                "--unit=harness-echo",
                "--wait",
                "--quiet",
                "-p",
                "DynamicUser=yes",
                "echo",
                token,
            ]
        )
        deadline = time.monotonic() + 10
        while token not in box.journal("harness-echo") and time.monotonic() < deadline:
            time.sleep(0.05)
        assert token in box.journal("harness-echo")
        assert token in box.journal(extra=["-o", "cat", "--identifier=echo"])


def test_copy_in_and_users(tmp_path: Path) -> None:
    tree = tmp_path / "app"
    (tree / "pkg" / "__pycache__").mkdir(parents=True)
    (tree / "pkg" / "mod.py").write_text("X = 1\n")
    (tree / "pkg" / "__pycache__" / "mod.cpython-311.pyc").write_bytes(b"junk")
    (tree / "run.sh").write_text("#!/bin/sh\necho ran\n")
    (tree / "run.sh").chmod(0o755)
    with Container() as box:
        box.copy_in(tree, "/srv/app", exclude=["__pycache__"])
        listing = box.sh(
            "cd /srv/app && find . | sort && stat -c '%U %a' run.sh && ./run.sh"
        ).stdout
        assert listing.split() == [".", "./pkg", "./pkg/mod.py", "./run.sh", "root", "755", "ran"]
        box.run(["useradd", "--create-home", "alice"])
        assert box.run(["id", "-un"], user="alice").stdout == "alice\n"
        assert box.sh("echo $HOME $XDG_RUNTIME_DIR", user="alice").stdout.startswith(
            "/home/alice /run/user/"
        )
        with pytest.raises(HarnessError, match="no user"):
            box.run(["true"], user="nobody-here")


def test_provisioned_cpsysd_runs_under_dynamic_user() -> None:
    with Container() as box:
        python = provision(box)
        probe = (
            "import os, cpsysd.render.common, cherrypy, systemd.daemon; "
            "print(os.getuid(), cpsysd.render.common._templates_dir())"
        )
        sandbox = ["DynamicUser=yes", "ProtectSystem=strict", "ProtectHome=yes", "PrivateTmp=yes"]
        properties = [arg for prop in sandbox for arg in ("-p", prop)]
        result = box.run(
            ["systemd-run", "--wait", "--pipe", "--quiet", *properties, python, "-c", probe]
        )
        uid, templates = result.stdout.split()
        assert int(uid) != 0
        assert templates == "/opt/cpsysd/venv/lib/python3.11/site-packages/cpsysd/units"
        assert box.run(["/opt/cpsysd/venv/bin/cpsysd", "--version"]).stdout.startswith("cpsysd ")


def test_exception_inside_tears_down() -> None:
    seen: list[tuple[str, int]] = []

    def explode() -> None:
        with Container() as box:
            seen.append((box.name, box.pid1))
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        explode()
    assert _gone(*seen[0]) == []


def test_failed_boot_raises_with_the_console_log() -> None:
    box = Container(systemd_args=["--unit=cpsysd-no-such.target"], boot_timeout=15)
    with pytest.raises(BootError) as caught:
        box.boot()
    print(caught.value)
    assert "cpsysd-no-such.target" in caught.value.console
    assert "--- container console ---" in str(caught.value)
    assert _gone(box.name, box.pid1) == []


_CHILD = textwrap.dedent(
    """
    import sys, time
    from cpsysd.harness.container import Container
    with Container() as box:
        print(box.name, box.pid1, flush=True)
        time.sleep(60)
    """
)


def _booted_child() -> tuple[subprocess.Popen[str], str, int]:
    child = subprocess.Popen([sys.executable, "-c", _CHILD], stdout=subprocess.PIPE, text=True)
    assert child.stdout is not None
    name, pid1 = child.stdout.readline().split()
    return child, name, int(pid1)


def _wait_gone(name: str, pid1: int) -> list[str]:
    deadline = time.monotonic() + 10
    while _gone(name, pid1) and time.monotonic() < deadline:
        time.sleep(0.05)
    return _gone(name, pid1)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP])
def test_signals_tear_down(signum: int) -> None:
    child, name, pid1 = _booted_child()
    try:
        child.send_signal(signum)
        child.wait(timeout=20)
    finally:
        child.kill()
        child.wait()
    assert child.returncode != 0
    assert _wait_gone(name, pid1) == []


def test_sigkill_of_the_harness_kills_the_container() -> None:
    child, name, pid1 = _booted_child()
    child.kill()
    child.wait()
    deadline = time.monotonic() + 10
    while os.path.exists(f"/proc/{pid1}") and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not os.path.exists(f"/proc/{pid1}"), "PR_SET_PDEATHSIG did not take the container down"
    # Its cgroup and scratch directory are left for the next harness to reap.
    assert name in reap_stale()
    assert _gone(name, pid1) == []
    assert mounts_under(harness.BASE / name) == []


def test_bad_arguments() -> None:
    with pytest.raises(HarnessError, match="invalid"):
        Container("../etc")
    with pytest.raises(HarnessError, match="network"):
        Container(network="bridge")
    with pytest.raises(HarnessError, match="not running"):
        Container().run(["true"])


def test_host_network_shares_the_hosts_namespace_without_net_admin() -> None:
    with Container(network="host") as box:
        assert box.run(["readlink", "/proc/self/ns/net"]).stdout.strip() == os.readlink(
            "/proc/self/ns/net"
        )
        assert _bounding_set(box.read_file("/proc/1/status")) & (1 << 12) == 0  # CAP_NET_ADMIN
        assert box.run(["readlink", "/proc/self/ns/pid"]).stdout.strip() != os.readlink(
            "/proc/self/ns/pid"
        )


def test_a_name_in_use_is_refused_and_the_other_container_untouched() -> None:
    with Container() as first:
        with pytest.raises(HarnessError, match="exists"):
            Container(first.name).boot()
        # Still up; "degraded" (a failed unit) is as good as "running", as for boot itself.
        state = first.run(["systemctl", "is-system-running"], check=False).stdout
        assert state in ("running\n", "degraded\n")
        assert (harness.BASE / first.name / "console.log").exists()
