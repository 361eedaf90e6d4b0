"""After ``cpsysd deploy``, what systemd starts by itself runs the live release (cpsysd.host.swap):
``systemctl restart NAME.target``, a simulated reboot (everything stopped, ``daemon-reload``,
``default.target`` started again, which is what boot starts) and, for a single service,
``systemctl restart NAME.socket`` with its first connection. The code in ``working_directory``
answers with another greeting from then on, so a unit of ``cpsysd install`` that starts shows."""

from __future__ import annotations

import pytest
from e2etools import example_spec, greetings, install_app, wait_until
from test_e2e_deploy import _set_greeting

from cpsysd.harness.container import Container

pytestmark = pytest.mark.e2e


def _active(box: Container) -> list[str]:
    out = box.run(["systemctl", "list-units", "--plain", "--no-legend", "--state=active",
                   "hello*.service"]).stdout  # fmt: skip
    return sorted(line.split()[0] for line in out.splitlines() if line.strip())


def _failed(box: Container) -> list[str]:
    """Units of the app that failed: a unit of cpsysd install started after a deploy fails (its
    socket passes its fds to the live release) and restarts until systemd gives up."""
    out = box.run(["systemctl", "list-units", "--plain", "--no-legend", "--state=failed",
                   "hello*"]).stdout  # fmt: skip
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def _deploy_two_releases(box: Container, workers: int) -> None:
    python = install_app(box, example_spec(health_path="/health", workers=workers))
    deploy = [python, "-m", "cpsysd", "deploy", "-c", "/etc/cpsysd/hello.toml"]
    for release in ("release-1", "release-2"):
        _set_greeting(box, release)
        box.run(deploy, timeout=300)
    # What the units of cpsysd install would serve if anything started them now.
    _set_greeting(box, "working-directory")


def _reboot(box: Container, stop: str) -> None:
    """Stop the app, reload, and start the targets cpsysd install enables units into, as boot
    does (starting an active target starts what it wants directly; default.target alone would
    not reach sockets.target's wants through the active basic.target)."""
    box.run(["systemctl", "stop", stop], timeout=120)
    assert _active(box) == []
    box.run(["systemctl", "daemon-reload"])
    box.run(["systemctl", "start", "sockets.target", "default.target"], timeout=180)


def test_workers_target_restart_and_reboot_run_the_live_release(container: Container) -> None:
    _deploy_two_releases(container, workers=3)
    live = [f"hello-release-r2@{i}.service" for i in (1, 2, 3)]
    assert _active(container) == live

    container.run(["systemctl", "restart", "hello.target"], timeout=180)
    assert greetings(container, 60) == {"release-2"}
    assert _active(container) == live
    assert _failed(container) == []

    _reboot(container, "hello.target")
    # Started by the target, not by a first connection: no request waits a cold start.
    wait_until(lambda: _active(container) == live, 60, "the live release's instances")
    assert greetings(container, 60) == {"release-2"}
    assert _active(container) == live
    assert _failed(container) == []


def test_single_socket_restart_and_reboot_run_the_live_release(container: Container) -> None:
    _deploy_two_releases(container, workers=1)
    live = ["hello-release@r2.service"]
    assert _active(container) == live

    container.run(["systemctl", "restart", "hello.socket"], timeout=180)
    assert greetings(container) == {"release-2"}  # the first connection starts the release
    assert _active(container) == live

    _reboot(container, "hello.socket")
    assert greetings(container) == {"release-2"}
    assert _active(container) == live
    # By hand, the unit of cpsysd install would start without a socket (the socket's Service=
    # is the release) and fail; it skips the start instead.
    container.run(["systemctl", "start", "hello.service"])
    shown = ["systemctl", "show", "-P", "ActiveState,ConditionResult", "hello.service"]
    assert container.run(shown).stdout.split() == ["inactive", "no"]
    assert _active(container) == live
    assert _failed(container) == []
