"""A fleet through real Ansible: ``cpsysd export ansible`` of the example app, run by
``ansible-playbook`` against three app hosts and one front host, each a systemd container of the
harness. The containers are joined on a private test network: a bridge in a network namespace
of its own, one veth into each container, addresses only from 192.0.2.0/24 (RFC 5737) and no
route anywhere else. Ansible enters the containers with a connection plugin that uses the
harness's nsenter prefix (ansible_plugins/connection/harness.py): no sshd, no local connection.

Shown: the first run brings all four up (each app host's code deployed as release r1) and the
front spreads requests over the three app hosts; a second run changes nothing; a rolling change
under load through the front fails no request; a change that breaks on the second host stops the
play there, the first (new) and third (old) hosts keep serving, the front fails no request, and
the second host still serves its live release after restarts and a socket-activated start, with
the broken files in its working directory; once the host has what the release needs, the next
run deploys there though no file changes."""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import require_container
from e2etools import LoadRun, curl

from cpsysd.harness.container import Container

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
PLUGINS = Path(__file__).resolve().parent / "ansible_plugins" / "connection"
APPS = {"app1": "192.0.2.11", "app2": "192.0.2.12", "app3": "192.0.2.13"}
FRONT = ("front1", "192.0.2.10")
VAULT_PASSWORD = "test-only-vault-password"
LIMIT = 500_000  # requests per load run: never reached, so the load lasts the whole play


@dataclass
class Fleet:
    boxes: dict[str, Container]
    work: Path
    app: Path  # the app's source directory, which the tests change
    wheel: Path


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True, timeout=30)


def join_network(stack: ExitStack, boxes: dict[str, Container], addresses: dict[str, str]) -> None:
    """A bridge in a network namespace made here, one veth pair per container: the container's
    end (eth0) moved into its network namespace with its address. Deleting the namespace takes
    the bridge and the veths with it."""
    tag = secrets.token_hex(3)
    netns = f"cpsysd-{tag}-fleet"
    ip("netns", "add", netns)
    stack.callback(subprocess.run, ["ip", "netns", "del", netns], capture_output=True, check=False)
    ip("-n", netns, "link", "add", "br0", "type", "bridge")
    ip("-n", netns, "link", "set", "br0", "up")
    for number, (name, box) in enumerate(boxes.items()):
        near = f"cv{tag}f{number}"  # <= 15 bytes (IFNAMSIZ)
        ip("-n", netns, "link", "add", near, "type", "veth", "peer", "name", "eth0",
           "netns", str(box.pid1))  # fmt: skip
        ip("-n", netns, "link", "set", near, "master", "br0", "up")
        box.run(["ip", "addr", "add", f"{addresses[name]}/24", "dev", "eth0"])
        box.run(["ip", "link", "set", "eth0", "up"])
        routes = box.run(["ip", "route", "show"]).stdout
        assert "default" not in routes, routes  # nothing outside 192.0.2.0/24 is reachable


def build_wheel(directory: Path) -> Path:
    # Debian's python3 builds it: its hatchling is what CI has too (scripts/setup.sh).
    subprocess.run(
        ["/usr/bin/python3", "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
         "--disable-pip-version-check", "-q", "-w", str(directory), str(REPO)],
        check=True, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    return next(directory.glob("cpsysd-*.whl"))


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[Fleet]:
    require_container()
    if shutil.which("ansible-playbook") is None:
        pytest.fail("ansible-playbook is missing: scripts/setup.sh installs ansible-core")
    app = tmp_path / "hello"
    shutil.copytree(REPO / "examples" / "hello", app, ignore=shutil.ignore_patterns("__pycache__"))
    wheel = build_wheel(tmp_path / "wheels")
    with ExitStack() as stack:
        boxes = {
            name: stack.enter_context(Container(f"ansible-{os.getpid()}-{name}"))
            for name in (*APPS, FRONT[0])
        }
        join_network(stack, boxes, {**APPS, FRONT[0]: FRONT[1]})
        # The harness masks what the machine enabled (its nginx among them); a front host of a
        # real fleet has nginx merely installed, which the role then enables and starts.
        boxes[FRONT[0]].run(["systemctl", "unmask", "nginx.service"])
        yield Fleet(boxes, tmp_path, app, wheel)


def export(fleet: Fleet, token: str) -> Path:
    output = fleet.work / "deploy"
    subprocess.run(
        [sys.executable, "-m", "cpsysd", "export", "ansible", "-c", str(fleet.app / "cpsysd.toml"),
         "-o", str(output)],
        check=True, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    hosts = {
        name: {
            "ansible_connection": "harness",
            "harness_enter_argv": box.enter_argv(),
            "ansible_python_interpreter": "/usr/bin/python3",
            "cpsysd_address": {**APPS, FRONT[0]: FRONT[1]}[name],
        }
        for name, box in fleet.boxes.items()
    }
    inventory = {"all": {"children": {
        "app": {"hosts": {name: hosts[name] for name in APPS}},
        "front": {"hosts": {FRONT[0]: hosts[FRONT[0]]}},
    }}}  # fmt: skip
    (output / "inventory.json").write_text(json.dumps(inventory))
    (fleet.work / "vault-password").write_text(VAULT_PASSWORD)
    vault = output / "group_vars" / "app" / "vault.yml"
    vault.parent.mkdir(parents=True, exist_ok=True)
    vault.write_text(json.dumps({"cpsysd_secrets": {"HELLO_TOKEN": token}}))
    subprocess.run(
        ["ansible-vault", "encrypt", "--vault-password-file", str(fleet.work / "vault-password"),
         str(vault)],
        check=True, capture_output=True, text=True, timeout=60, env=ansible_env(fleet),
    )  # fmt: skip
    return output


def ansible_env(fleet: Fleet) -> dict[str, str]:
    return {
        **os.environ,
        "HOME": str(fleet.work),
        "ANSIBLE_CONFIG": str(fleet.work / "none.cfg"),
        "ANSIBLE_LOCAL_TEMP": str(fleet.work / "ansible-tmp"),
        "ANSIBLE_CONNECTION_PLUGINS": str(PLUGINS),
        "ANSIBLE_PIPELINING": "1",
        "ANSIBLE_FORKS": "4",
        "ANSIBLE_NOCOLOR": "1",
    }


@dataclass(frozen=True)
class Run:
    returncode: int
    output: str
    recap: dict[str, dict[str, int]]


def play(fleet: Fleet, output: Path) -> Run:
    result = subprocess.run(
        ["ansible-playbook", "-i", str(output / "inventory.json"),
         "--vault-password-file", str(fleet.work / "vault-password"),
         "-e", f"cpsysd_package={fleet.wheel}", "-e", "cpsysd_pip_extra_args=--no-index",
         str(output / "site.yml")],
        capture_output=True, text=True, timeout=900, check=False, env=ansible_env(fleet),
    )  # fmt: skip
    recap = {
        match[1]: {key: int(value) for key, value in re.findall(r"(\w+)=(\d+)", match[2])}
        for match in re.finditer(r"^(\S+)\s+:\s+(ok=.*)$", result.stdout, re.MULTILINE)
    }
    return Run(result.returncode, result.stdout + result.stderr, recap)


def hosts_answering(fleet: Fleet, probe: str, count: int = 30) -> dict[str, int]:
    """``count`` requests through the front; how many each app host's access log shows."""
    front = fleet.boxes[FRONT[0]]
    for _ in range(count):
        # The access log's USER_AGENT field marks these requests (/whoami takes no query).
        status, _, _ = curl(front, "http://127.0.0.1/whoami", "--user-agent", probe)
        assert status == 200
    seen = {}
    for name in APPS:
        log = (
            fleet.boxes[name]
            .run(["journalctl", "-u", "hello*.service", "-o", "json", "--no-pager"])
            .stdout
        )
        seen[name] = log.count(probe)
    return seen


def greeting(box: Container, address: str) -> str:
    status, _, body = curl(box, f"http://{address}:8080/")
    assert status == 200, body
    return body.split(" from ")[0]


def live_release(box: Container) -> str:
    """The id ``cpsysd releases hello`` marks live on ``box`` ("" when none is)."""
    listing = box.run(["/opt/cpsysd/venv/bin/cpsysd", "releases", "hello"]).stdout
    return next(
        (line.split("\t")[0] for line in listing.splitlines() if line.endswith("\tlive")), ""
    )


def test_fleet_through_ansible(fleet: Fleet, figure: Callable[[str, str], None]) -> None:
    token = f"token-{secrets.token_hex(8)}"
    output = export(fleet, token)
    front = fleet.boxes[FRONT[0]]

    first = play(fleet, output)
    assert first.returncode == 0, first.output[-6000:]
    assert token not in first.output
    assert all(first.recap[name]["changed"] > 0 for name in (*APPS, FRONT[0])), first.recap
    seen = hosts_answering(fleet, secrets.token_hex(6))
    assert all(count > 0 for count in seen.values()), seen
    figure("ansible: 30 requests through the front, per app host", str(seen))
    for name in APPS:
        box = fleet.boxes[name]
        mode = box.run(["stat", "-c", "%a %U", "/etc/cpsysd/hello.env"]).stdout.split()
        assert mode == ["600", "root"]
        # The first run installs, then deploys the code as release r1 (what the front reached).
        assert live_release(box) == "r1"
        unit = "hello-release@r1.service"
        pid = box.run(["systemctl", "show", "-p", "MainPID", "--value", unit]).stdout
        environ = box.run(["cat", f"/proc/{pid.strip()}/environ"]).stdout
        assert f"HELLO_TOKEN={token}" in environ.split("\0")
    assert token not in "".join(
        p.read_text(errors="replace") for p in output.rglob("*") if p.is_file()
    )

    second = play(fleet, output)
    assert second.returncode == 0, second.output[-6000:]
    assert all(counts["changed"] == 0 for counts in second.recap.values()), second.recap

    # A rolling change under load through the front: every app host gets the new greeting.
    conf = fleet.app / "app.conf"
    conf.write_text(conf.read_text().replace('greeting = "Hello"', 'greeting = "Howdy"'))
    output = export(fleet, token)
    load = LoadRun(front, 80, "/whoami", limit=LIMIT, seconds=300)
    rolled = play(fleet, output)
    counts = load.finish()
    assert rolled.returncode == 0, rolled.output[-6000:]
    assert counts["failed"] == 0, counts
    assert counts["ok"] < LIMIT, counts
    figure("ansible: rolling change over 3 hosts under load", f"{counts['ok']} ok, 0 failed")
    assert {greeting(front, address) for address in APPS.values()} == {"Howdy"}
    assert {live_release(fleet.boxes[name]) for name in APPS} == {"r2"}

    # A release that breaks where a file it needs is missing: on app2 only.
    for name in ("app1", "app3"):
        fleet.boxes[name].run(["mkdir", "-p", "/etc/hello"])
        fleet.boxes[name].run(["touch", "/etc/hello/feature.ok"])
    source = fleet.app / "hello.py"
    source.write_text(
        source.read_text().replace(
            "import cherrypy\n",
            "import cherrypy\n\nif not os.path.exists('/etc/hello/feature.ok'):\n"
            "    raise RuntimeError('this release needs /etc/hello/feature.ok')\n",
        )
    )
    conf.write_text(conf.read_text().replace('greeting = "Howdy"', 'greeting = "Hi"'))
    output = export(fleet, token)
    load = LoadRun(front, 80, "/whoami", limit=LIMIT, seconds=300)
    broken = play(fleet, output)
    counts = load.finish()
    assert broken.returncode != 0, broken.output[-6000:]
    assert broken.recap["app2"]["failed"] == 1, broken.recap
    assert broken.recap.get("app3", {}).get("changed", 0) == 0, broken.recap
    # cpsysd install's preflight imports the new code before it writes a unit: the play stops at
    # app2's install with the app's own error, before its deploy; app2's live release is r2.
    assert "this release needs /etc/hello/feature.ok" in broken.output
    assert counts["failed"] == 0, counts
    assert counts["ok"] < LIMIT, counts
    figure("ansible: release broken on host 2, requests through the front", str(counts))
    assert greeting(front, APPS["app1"]) == "Hi"
    assert greeting(front, APPS["app3"]) == "Howdy"
    assert greeting(front, APPS["app2"]) == "Howdy"

    # app2's working directory now holds the broken code, yet what systemd starts by itself is
    # the live release: a restart of the app, of the unit install wrote, or a first connection
    # after the app stopped (socket activation, as after a reboot) all bring back r2.
    app2 = fleet.boxes["app2"]
    assert "feature.ok" in app2.run(["cat", "/opt/cpsysd/apps/hello/hello.py"]).stdout
    assert live_release(app2) == "r2"
    app2.run(["systemctl", "restart", "hello-release@r2.service"])
    assert greeting(front, APPS["app2"]) == "Howdy"
    app2.run(["systemctl", "restart", "hello.service"])
    assert greeting(front, APPS["app2"]) == "Howdy"
    app2.run(["systemctl", "stop", "hello-release@r2.service"])
    assert greeting(front, APPS["app2"]) == "Howdy"

    # With the file app2 lacked in place, the next run changes no file on app2, yet its live
    # release is not what it would deploy: the play deploys there and goes on to app3.
    app2.run(["mkdir", "-p", "/etc/hello"])
    app2.run(["touch", "/etc/hello/feature.ok"])
    resumed = play(fleet, output)
    assert resumed.returncode == 0, resumed.output[-6000:]
    assert resumed.recap["app1"]["changed"] == 0, resumed.recap
    assert resumed.recap["app2"]["changed"] > 0, resumed.recap
    assert {greeting(front, address) for address in APPS.values()} == {"Hi"}
