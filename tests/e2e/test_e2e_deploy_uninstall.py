"""``cpsysd uninstall`` after deploys, under a real systemd (cpsysd.host.deploy.retire): the
release units stop, the release templates and every ``cpsysd-release.conf`` drop-in go, and the
releases stay on disk with none live, so that after ``cpsysd install`` a ``rollback`` brings the
last live one back; ``uninstall --releases`` deletes them too and leaves the file system as it
was before ``cpsysd install``. On the way, a deploy or an install with another ``workers`` count
is refused."""

from __future__ import annotations

import pytest
from e2etools import example_spec, greetings, prepare_app
from test_e2e_deploy import _set_greeting
from test_e2e_uninstall import _snapshot

from cpsysd.harness.container import Container

pytestmark = pytest.mark.e2e

RELEASES = "/var/lib/cpsysd"


def _outside_releases(lines: list[str]) -> list[str]:
    return [line for line in lines if not line.startswith(RELEASES)]


def _units(box: Container) -> str:
    loaded = box.run(["systemctl", "list-units", "--all", "--plain", "--no-legend", "hello*"])
    files = box.run(["systemctl", "list-unit-files", "--no-legend", "hello*"], check=False)
    return loaded.stdout.strip() + files.stdout.strip()


def test_uninstall_after_deploys_removes_what_deploy_wrote(container: Container) -> None:
    install = prepare_app(container, example_spec(health_path="/health", workers=3))
    cpsysd = [install[0], "-m", "cpsysd"]
    deploy = [*cpsysd, "deploy", "-c", "/etc/cpsysd/hello.toml"]
    before = _snapshot(container)
    container.run(install)
    for release in ("release-1", "release-2"):
        _set_greeting(container, release)
        container.run(deploy, timeout=300)

    container.run(["sed", "-i", "s/^workers = 3$/workers = 2/", "/etc/cpsysd/hello.toml"])
    refused = container.run(deploy, check=False, timeout=120)
    assert refused.returncode != 0
    assert refused.stderr.count("\n") == 1, refused.stderr
    assert "hello runs workers = 3 (release r2) and this description has workers = 2" in (
        refused.stderr
    )
    # install too: hello@3.socket would stop, or a 4th would listen with no release behind it.
    reinstall = container.run(install, check=False)
    assert reinstall.returncode != 0
    assert "(release r2) and this description has workers = 2" in reinstall.stderr
    container.run(["sed", "-i", "s/^workers = 2$/workers = 3/", "/etc/cpsysd/hello.toml"])
    assert greetings(container, 30) == {"release-2"}

    local = "/etc/systemd/system/hello@2.socket.d/local.conf"  # the user's: it stays
    container.write_file(local, "[Socket]\nBacklog=2048\n")
    removed = container.run([*cpsysd, "uninstall", "hello"]).stdout
    assert "/etc/systemd/system/hello.target.d/cpsysd-release.conf" in removed
    assert "/etc/systemd/system/hello@2.socket.d/cpsysd-release.conf" in removed
    assert "/etc/systemd/system/hello-release-r2@.service" in removed
    assert container.run(["cat", local]).stdout == "[Socket]\nBacklog=2048\n"
    container.run(["rm", "-r", "/etc/systemd/system/hello@2.socket.d"])
    container.run(["systemctl", "daemon-reload"])
    assert _units(container) == ""
    assert container.run(["pgrep", "-f", "cpsysd serve"], check=False).returncode == 1
    assert _outside_releases(_snapshot(container)) == _outside_releases(before)
    listed = container.run([*cpsysd, "releases", "hello"]).stdout.splitlines()
    assert [line.split("\t")[0] for line in listed] == ["r1", "r2"]
    assert listed[1].endswith("\tprevious")  # none is live: nothing runs

    # Installed again, the code in working_directory serves; rollback brings release 2 back.
    _set_greeting(container, "working-directory")
    container.run(install)
    assert greetings(container, 30) == {"working-directory"}
    container.run([*cpsysd, "rollback", "hello"], timeout=300)
    assert greetings(container, 30) == {"release-2"}

    container.run([*cpsysd, "uninstall", "hello", "--releases"])
    assert _units(container) == ""
    assert _snapshot(container) == before
