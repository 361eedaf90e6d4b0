"""``cpsysd install`` inside a real systemd: socket activation on the privileged port 80, the
app served by a DynamicUser hardened service that never runs as root, its STATUS= line shown."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest
from e2etools import curl, example_spec, install_app, prepare_app

from cpsysd.errors import CommandError
from cpsysd.harness.container import Container

pytestmark = pytest.mark.e2e


def test_first_request_on_port_80_by_a_dynamic_user(
    container: Container, figure: Callable[[str, str], None]
) -> None:
    spec = example_spec(listeners=(example_spec().listeners[0].with_port(80),))
    install_app(container, spec)
    # install enabled and started the socket only: systemd listens, the app is not running yet.
    assert container.run(["systemctl", "is-active", "hello.socket"]).stdout == "active\n"
    inactive = container.run(["systemctl", "is-active", "hello.service"], check=False)
    assert inactive.stdout == "inactive\n"
    listening = container.run(["ss", "-Htlnp", "sport = :80"]).stdout
    assert '"systemd",pid=1,' in listening

    status, seconds, body = curl(container, "http://127.0.0.1/")
    assert status == 200
    assert body.startswith("Hello from cpsysd!")
    figure("first request, socket activation (port 80)", f"{seconds * 1000:.0f} ms")

    whoami = json.loads(curl(container, "http://127.0.0.1/whoami")[2])
    assert whoami["uid"] != 0
    assert whoami["ip"] == "127.0.0.1"
    properties = container.run(
        ["systemctl", "show", "hello.service", "-p", "MainPID", "-p", "DynamicUser", "-p", "User"]
    ).stdout
    assert "DynamicUser=yes" in properties
    main_pid = int(properties.split("MainPID=")[1].split()[0])
    assert main_pid == whoami["pid"]
    # The process as the kernel sees it: not root, no capabilities at all.
    status_file = container.read_file(f"/proc/{main_pid}/status")
    uids = next(line for line in status_file.splitlines() if line.startswith("Uid:")).split()[1:]
    assert "0" not in uids
    capabilities = {
        line.split()[0]: int(line.split()[1], 16)
        for line in status_file.splitlines()
        if line.startswith("Cap")
    }
    assert capabilities["CapEff:"] == capabilities["CapPrm:"] == capabilities["CapBnd:"] == 0
    user = container.run(["ps", "-o", "user=", "-p", str(main_pid)]).stdout.strip()
    assert user != "root"

    assert container.wait_settled("hello.service") == "active/running"
    shown = container.run(["systemctl", "status", "--no-pager", "--lines=0", "hello.service"])
    assert 'Status: "' in shown.stdout, shown.stdout
    print(shown.stdout)
    exposure = container.run(["systemd-analyze", "security", "--no-pager", "hello.service"]).stdout
    score = exposure.strip().splitlines()[-1]
    assert "SAFE" in score or "OK" in score
    figure("exposure of hello.service (running systemd)", score.split(": ", 1)[1])


def test_install_is_idempotent_and_refuses_foreign_units(container: Container) -> None:
    spec = example_spec()
    python = install_app(container, spec)
    again = container.run(
        [python, "-m", "cpsysd", "install", "hello", "-c", "/etc/cpsysd/hello.toml"]
    )
    assert "wrote" not in again.stdout
    container.write_file("/etc/systemd/system/other.service", "[Service]\nExecStart=/bin/true\n")
    other = example_spec(name="other")
    with pytest.raises(CommandError, match="was not written by cpsysd"):
        install_app(container, other)


def test_install_under_a_hardened_umask(container: Container) -> None:
    """Root's umask 027 (CIS benchmarks): the state directory install creates and the byte-code
    caches it compiles must still be readable by the service's DynamicUser."""
    install = prepare_app(container, example_spec())
    container.run(["rm", "-rf", "/var/lib/cpsysd"])  # made again by install, under the umask
    container.run(["sh", "-c", 'umask 027 && exec "$@"', "sh", *install])
    assert container.run(["stat", "-c", "%a", "/var/lib/cpsysd"]).stdout == "755\n"
    status, _, body = curl(container, "http://127.0.0.1:8080/")
    assert (status, body.startswith("Hello from cpsysd!")) == (200, True)
    caches = container.run(["find", "/srv/hello/__pycache__", "-printf", "%m %f\n"]).stdout
    assert caches.split()[0] == "755", caches  # the directory itself comes first
    assert all(line.startswith("644 ") for line in caches.splitlines()[1:]), caches
