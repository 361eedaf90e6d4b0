"""Releases of a ``workers = 3`` app under a real systemd (cpsysd.host.swap): with 4 clients in a
loop, release 1 -> release 2 swaps instance by instance and fails no request, afterwards every
instance answers with release 2; a release whose health path answers 500 is refused while
release 2 keeps serving on all three; rollback to release 1 fails no request either."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from e2etools import example_spec, greetings, install_app
from test_e2e_deploy import (
    _assert_no_failure,
    _make_health_fail,
    _set_greeting,
    _under_load,
)

from cpsysd.harness.container import Container

pytestmark = pytest.mark.e2e


def _live_units(box: Container) -> list[str]:
    out = box.run(["systemctl", "list-units", "--plain", "--no-legend", "--state=active",
                   "hello*.service"]).stdout  # fmt: skip
    return sorted(line.split()[0] for line in out.splitlines() if line.strip())


def test_deploy_with_three_workers_swaps_instance_by_instance_under_load(
    container: Container, figure: Callable[[str, str], None]
) -> None:
    python = install_app(container, example_spec(health_path="/health", workers=3))
    deploy = [python, "-m", "cpsysd", "deploy", "-c", "/etc/cpsysd/hello.toml"]
    _set_greeting(container, "release-1")
    first = container.run(deploy, timeout=300)
    assert first.stdout.startswith(
        "release r1 is live (replaced hello@1.service .. hello@3.service)"
    )
    assert _live_units(container) == [f"hello-release-r1@{i}.service" for i in (1, 2, 3)]

    _set_greeting(container, "release-2")
    result, counts = _under_load(container, deploy)
    assert result.returncode == 0, result.stderr  # type: ignore[attr-defined]
    served = _assert_no_failure(counts)
    assert greetings(container, 60) == {"release-2"}
    assert _live_units(container) == [f"hello-release-r2@{i}.service" for i in (1, 2, 3)]
    figure("requests during cpsysd deploy, workers = 3 (4 clients)", f"{served} served, 0 failed")

    _make_health_fail(container)
    result, counts = _under_load(container, deploy)
    assert result.returncode != 0  # type: ignore[attr-defined]
    stderr = result.stderr  # type: ignore[attr-defined]
    assert "release r3 of hello (instance 1) did not start: health gate failed" in stderr
    assert "hello-release-r2@1.service keeps serving" in stderr
    _assert_no_failure(counts)
    assert greetings(container, 60) == {"release-2"}
    assert _live_units(container) == [f"hello-release-r2@{i}.service" for i in (1, 2, 3)]

    result, counts = _under_load(container, [python, "-m", "cpsysd", "rollback", "hello"])
    assert result.returncode == 0, result.stderr  # type: ignore[attr-defined]
    served = _assert_no_failure(counts)
    assert greetings(container, 60) == {"release-1"}
    assert _live_units(container) == [f"hello-release-r1@{i}.service" for i in (1, 2, 3)]
    figure("requests during cpsysd rollback, workers = 3 (4 clients)", f"{served} served, 0 failed")
    triggers = container.run(["systemctl", "show", "-P", "Triggers", "hello@2.socket"]).stdout
    assert "hello-release-r1@2.service" in triggers

    # cpsysd restart restarts the live release, not hello@I.service with working_directory's
    # code (whose greeting is release-2 now): still release 1 only, on the release's units.
    container.run([python, "-m", "cpsysd", "restart", "hello"], timeout=300)
    assert greetings(container, 60) == {"release-1"}
    assert _live_units(container) == [f"hello-release-r1@{i}.service" for i in (1, 2, 3)]
