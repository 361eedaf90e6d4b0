"""Release units (cpsysd.render.releases): the template of ``NAME-release@ID.service`` shares the
app's sockets (``Sockets=``), runs from the release's directory, and the socket drop-in names the
live release; the real ``systemd-analyze verify`` loads them all, drop-in included, silently."""

from __future__ import annotations

import subprocess
from pathlib import Path, PurePosixPath

import pytest

from cpsysd.description.load import AppSpec, parse_spec
from cpsysd.render.releases import (
    release_template_name,
    release_unit,
    release_worker_template_name,
    release_worker_unit,
    render_boot_dropins,
    render_release_service,
    render_release_worker_service,
    render_socket_dropin,
    socket_dropins,
    worker_socket_dropins,
)
from cpsysd.render.units import RenderOptions, render_units


def spec_of(**fields: object) -> AppSpec:
    base = {"name": "app", "entry": "app:Root", "python": "/usr/bin/python3"}
    return parse_spec({**base, **fields}, "/srv/app")


def directives(text: str) -> list[tuple[str, str]]:
    return [
        (key, value)
        for key, _, value in (line.partition("=") for line in text.splitlines())
        if key and not key.startswith(("#", "["))
    ]


def _release_tree(releases: Path, name: str, release_id: str) -> None:
    """What cpsysd deploy leaves for a release: its venv interpreter and its app directory."""
    (releases / name / release_id / "venv" / "bin").mkdir(parents=True)
    (releases / name / release_id / "venv" / "bin" / "python").symlink_to("/usr/bin/python3")
    (releases / name / release_id / "app").mkdir()


def test_release_template_shares_the_sockets_and_runs_from_the_release() -> None:
    spec = spec_of(listen=["8080", "8443=admin"], state_directory=True)
    text = render_release_service(spec, PurePosixPath("/var/lib/cpsysd/releases"))
    found = directives(text)
    assert ("Sockets", "app.socket") in found
    assert ("Sockets", "app-admin.socket") in found
    root = "/var/lib/cpsysd/releases/app/%i"
    assert ("ExecStart", f"{root}/venv/bin/python -m cpsysd serve -c {root}/cpsysd.toml") in found
    assert ("WorkingDirectory", f"{root}/app") in found
    # The journal and the state directory are the app's, whichever release runs.
    assert ("SyslogIdentifier", "app") in found
    assert ("StateDirectory", "app") in found
    single = dict(directives(render_units(spec, RenderOptions("/x.toml"))["app.service"]))
    assert "Sockets" not in single  # a plain install is unchanged


def test_percent_in_the_releases_path_is_not_a_specifier() -> None:
    text = render_release_service(spec_of(), PurePosixPath("/srv/100%/releases"))
    assert "WorkingDirectory=/srv/100%%/releases/app/%i/app" in text


def test_socket_dropins_name_the_live_release() -> None:
    spec = spec_of(listen=["8080", "8443=admin"])
    assert socket_dropins(spec) == [
        "app.socket.d/cpsysd-release.conf",
        "app-admin.socket.d/cpsysd-release.conf",
    ]
    assert ("Service", "app-release@r7.service") in directives(render_socket_dropin(spec, "r7"))
    assert release_unit("app", "r7") == "app-release@r7.service"


@pytest.mark.parametrize("network", [True, False])
def test_systemd_analyze_verifies_the_release_units(tmp_path: Path, network: bool) -> None:
    spec = spec_of(network=network, health_path="/health")
    releases = tmp_path / "releases"
    _release_tree(releases, "app", "r1")
    units = tmp_path / "units"
    units.mkdir()
    for name, text in render_units(spec, RenderOptions("/etc/cpsysd/app.toml")).items():
        (units / name).write_text(text)
    template = render_release_service(spec, PurePosixPath(releases))
    (units / release_template_name(spec).replace("@.", "@r1.")).write_text(template)
    for dropin in socket_dropins(spec):
        (units / dropin).parent.mkdir()
        (units / dropin).write_text(render_socket_dropin(spec, "r1"))
    argv = [str(units / name) for name in ("app-release@r1.service", "app.socket", "app.service")]
    result = subprocess.run(["systemd-analyze", "verify", *argv], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout + result.stderr == ""
    # The drop-in is read: pointing the socket at a release with no unit fails the check.
    (units / socket_dropins(spec)[0]).write_text(render_socket_dropin(spec, "r9"))
    again = subprocess.run(["systemd-analyze", "verify", *argv], capture_output=True, text=True)
    assert "service app-release@r9.service not loaded" in again.stderr


def test_worker_release_instance_shares_its_instance_socket() -> None:
    spec = spec_of(workers=3, listen=["8080", "8443=admin"], state_directory=True)
    assert release_worker_template_name("app", "r2") == "app-release-r2@.service"
    assert release_worker_unit("app", "r2", "3") == "app-release-r2@3.service"
    found = directives(render_release_worker_service(spec, "r2", PurePosixPath("/srv/rel")))
    # Instance I takes over I's own sockets (ReusePort=, one per instance), beside the old one.
    assert ("Sockets", "app@%i.socket") in found
    assert ("Sockets", "app-admin@%i.socket") in found
    root = "/srv/rel/app/r2"
    assert ("ExecStart", f"{root}/venv/bin/python -m cpsysd serve -c {root}/cpsysd.toml") in found
    assert ("WorkingDirectory", f"{root}/app") in found
    assert ("PartOf", "app.target") in found
    assert ("Environment", "CPSYSD_INSTANCE=%i") in found
    assert worker_socket_dropins(spec, "2") == [
        "app@2.socket.d/cpsysd-release.conf",
        "app-admin@2.socket.d/cpsysd-release.conf",
    ]
    dropin = directives(render_socket_dropin(spec, "r2", "2"))
    assert ("Service", "app-release-r2@2.service") in dropin


def test_systemd_analyze_verifies_a_worker_release_instance(tmp_path: Path) -> None:
    spec = spec_of(workers=3, health_path="/health")
    releases = tmp_path / "releases"
    _release_tree(releases, "app", "r4")
    units = tmp_path / "units"
    units.mkdir()
    for name, text in render_units(spec, RenderOptions("/etc/cpsysd/app.toml")).items():
        (units / name.replace("@.", "@2.")).write_text(text)
    template = render_release_worker_service(spec, "r4", PurePosixPath(releases))
    (units / "app-release-r4@2.service").write_text(template)
    for dropin in worker_socket_dropins(spec, "2"):
        (units / dropin).parent.mkdir()
        (units / dropin).write_text(render_socket_dropin(spec, "r4", "2"))
    argv = [str(units / name) for name in ("app-release-r4@2.service", "app@2.socket")]
    result = subprocess.run(["systemd-analyze", "verify", *argv], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout + result.stderr == ""


def test_boot_dropins_skip_the_installed_units_and_want_the_live_release(tmp_path: Path) -> None:
    single = render_boot_dropins(spec_of(), "r3")
    assert list(single) == ["app.service.d/cpsysd-release.conf"]
    assert ("ConditionPathExists", "!/") in directives(single["app.service.d/cpsysd-release.conf"])

    spec = spec_of(workers=2, health_path="/health")
    dropins = render_boot_dropins(spec, "r4")
    assert list(dropins) == [
        "app@.service.d/cpsysd-release.conf",
        "app.target.d/cpsysd-release.conf",
    ]
    wants = directives(dropins["app.target.d/cpsysd-release.conf"])
    assert wants == [("Wants", "app-release-r4@1.service"), ("Wants", "app-release-r4@2.service")]
    # systemd-analyze loads the target with its drop-in and the release instances, silently.
    releases = tmp_path / "releases"
    _release_tree(releases, "app", "r4")
    units = tmp_path / "units"
    units.mkdir()
    for name, text in render_units(spec, RenderOptions("/etc/cpsysd/app.toml")).items():
        (units / name).write_text(text)
    (units / "app-release-r4@.service").write_text(
        render_release_worker_service(spec, "r4", PurePosixPath(releases))
    )
    for dropin, text in dropins.items():
        (units / dropin).parent.mkdir()
        (units / dropin).write_text(text)
    argv = ["systemd-analyze", "verify", str(units / "app.target")]
    result = subprocess.run(argv, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout + result.stderr == ""
