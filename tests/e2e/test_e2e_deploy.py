"""Releases under a real systemd (cpsysd.host.deploy): with 4 clients in a loop throughout,
release 1 -> release 2 fails no request and afterwards only release 2 answers; a release that
cannot import and one whose health path answers 500 are refused with their cause while release 2
keeps serving; rollback to release 1 fails no request either."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from e2etools import LoadRun, example_spec, greetings, install_app

from cpsysd.harness.container import Container

pytestmark = pytest.mark.e2e

CLIENTS = 4
HELLO = "/srv/hello/hello.py"


def _set_greeting(box: Container, greeting: str) -> None:
    box.run(["sed", "-i", f's/^greeting = .*/greeting = "{greeting}"/', "/srv/hello/app.conf"])


def _under_load(box: Container, argv: list[str]) -> tuple[object, list[dict[str, object]]]:
    loads = [LoadRun(box, 8080, "/", limit=20000, seconds=120) for _ in range(CLIENTS)]
    result = box.run(argv, check=False, timeout=300)
    print(result.stdout, result.stderr)
    return result, [load.finish() for load in loads]


def _make_health_fail(box: Container) -> None:
    """The app's health path answers 500 from now on (the next release fails the gate)."""
    sick = (
        "import pathlib; p = pathlib.Path('/srv/hello/hello.py'); "
        "p.write_text(p.read_text().replace('return \"ok\\\\n\"', "
        "'cherrypy.response.status = 500; return \"sick\"'))"
    )
    box.run(["/usr/bin/python3", "-c", sick])
    assert "status = 500" in box.run(["cat", HELLO]).stdout


def _assert_no_failure(counts: list[dict[str, object]]) -> int:
    for count in counts:
        assert count["failed"] == 0, count["errors"]
    return sum(int(count["ok"]) for count in counts)  # type: ignore[call-overload]


def test_deploy_refuse_broken_releases_and_roll_back_under_load(
    container: Container, figure: Callable[[str, str], None]
) -> None:
    python = install_app(container, example_spec(health_path="/health"))
    cpsysd = [python, "-m", "cpsysd"]
    deploy = [*cpsysd, "deploy", "-c", "/etc/cpsysd/hello.toml"]
    _set_greeting(container, "release-1")
    first = container.run(deploy, timeout=300)
    assert first.stdout.startswith("release r1 is live (replaced hello.service)")
    assert greetings(container) == {"release-1"}

    _set_greeting(container, "release-2")
    result, counts = _under_load(container, deploy)
    assert result.returncode == 0, result.stderr  # type: ignore[attr-defined]
    served = _assert_no_failure(counts)
    assert greetings(container) == {"release-2"}  # the old release is gone
    figure("requests during cpsysd deploy (4 clients)", f"{served} served, 0 failed")

    container.run(["cp", HELLO, f"{HELLO}.good"])
    container.write_file(HELLO, "raise ImportError('release 3 is broken')\n")
    result, counts = _under_load(container, deploy)
    assert result.returncode != 0  # type: ignore[attr-defined]
    stderr = result.stderr  # type: ignore[attr-defined]
    assert stderr.count("\n") == 1, stderr
    assert "release r3 is not the app" in stderr
    assert "release 3 is broken" in stderr
    _assert_no_failure(counts)
    assert greetings(container) == {"release-2"}

    container.run(["cp", f"{HELLO}.good", HELLO])
    _make_health_fail(container)
    result, counts = _under_load(container, deploy)
    assert result.returncode != 0  # type: ignore[attr-defined]
    stderr = result.stderr  # type: ignore[attr-defined]
    assert stderr.count("\n") == 1, stderr
    assert "release r4 of hello did not start: health gate failed: GET /health answered 500" in (
        stderr
    )
    assert "hello-release@r2.service keeps serving" in stderr
    _assert_no_failure(counts)
    assert greetings(container) == {"release-2"}

    result, counts = _under_load(container, [*cpsysd, "rollback", "hello"])
    assert result.returncode == 0, result.stderr  # type: ignore[attr-defined]
    served = _assert_no_failure(counts)
    assert greetings(container) == {"release-1"}
    figure("requests during cpsysd rollback (4 clients)", f"{served} served, 0 failed")

    listed = container.run([*cpsysd, "releases", "hello"]).stdout.splitlines()
    assert [line.split("\t")[0] for line in listed] == ["r1", "r2"]  # failed ones removed
    assert listed[0].endswith("\tlive")
    assert listed[1].endswith("\tprevious")
    socket_service = container.run(["systemctl", "show", "-P", "Triggers", "hello.socket"])
    assert "hello-release@r1.service" in socket_service.stdout
