"""``cpsysd uninstall`` under a real systemd: stopped, disabled, and no unit, symlink, state or
description left behind: the file system is as it was before ``cpsysd install``."""

from __future__ import annotations

import pytest
from e2etools import curl, example_spec, prepare_app

from cpsysd.harness.container import Container

pytestmark = pytest.mark.e2e

# Everything install writes or systemd derives from it lives under these.
WATCHED = "/etc/systemd /var/lib/cpsysd /var/lib/private /run/systemd/system /run/systemd/transient"


def _snapshot(box: Container) -> list[str]:
    script = f"find {WATCHED} -printf '%p %y %m %l\\n' 2>/dev/null | sort"
    return box.sh(script, check=False).stdout.splitlines()


def test_uninstall_leaves_nothing_behind(container: Container) -> None:
    install = prepare_app(container, example_spec())
    python = install[0]
    before = _snapshot(container)
    container.run(install)
    assert curl(container, "http://127.0.0.1:8080/health")[0] == 200
    assert any("hello" in line for line in _snapshot(container))

    result = container.run([python, "-m", "cpsysd", "uninstall", "hello"])
    print(result.stdout)
    assert "/etc/systemd/system/hello.service" in result.stdout
    assert _snapshot(container) == before
    files = container.run(
        ["systemctl", "list-unit-files", "--no-legend", "hello*"], check=False
    ).stdout
    assert files.strip() == ""
    units = container.run(["systemctl", "list-units", "--all", "--no-legend", "hello*"]).stdout
    assert units.strip() == ""
    assert container.run(["pgrep", "-f", "cpsysd serve"], check=False).returncode == 1
    listening = container.run(["ss", "-Htln", "sport = :8080"]).stdout
    assert listening.strip() == ""
    again = container.run([python, "-m", "cpsysd", "uninstall", "hello"], check=False)
    assert again.returncode != 0
    assert "not installed" in again.stderr
