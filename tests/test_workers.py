"""Worker template units: names, sockets, the target, and systemd-analyze verify of instances."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from cpsysd.description.load import AppSpec, parse_spec
from cpsysd.errors import SpecError
from cpsysd.host.verify import verify_units
from cpsysd.render.common import hardening_lines
from cpsysd.render.units import RenderOptions, render_units, units_to_enable
from cpsysd.render.workers import instance_listener, instance_names

OPTIONS = RenderOptions("/var/lib/cpsysd/app.toml")


def spec_of(**fields: object) -> AppSpec:
    base = {"name": "app", "entry": "app:Root", "python": "/usr/bin/python3", "workers": 3}
    return parse_spec({**base, **fields}, "/srv/app")


def directives(text: str) -> list[tuple[str, str]]:
    return [
        (key, value)
        for key, _, value in (line.partition("=") for line in text.splitlines())
        if key and not key.startswith(("#", "["))
    ]


def analyze_instance(units: dict[str, str], instance: str, tmp_path: Path) -> str:
    """systemd-analyze verify of every unit, templates loaded as instance ``instance``; returns
    everything it printed (stdout + stderr), which must be empty."""
    paths = []
    for name, text in units.items():
        path = tmp_path / name.replace("@.", f"@{instance}.")
        path.write_text(text)
        paths.append(str(path))
    result = subprocess.run(
        ["systemd-analyze", "verify", *paths], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    return result.stdout + result.stderr


def test_reuseport_renders_the_template_set(tmp_path: Path) -> None:
    spec = spec_of()
    units = render_units(spec, OPTIONS)
    assert list(units) == ["app@.service", "app@.socket", "app.target"]
    socket = directives(units["app@.socket"])
    assert ("ListenStream", "8080") in socket
    assert ("ReusePort", "yes") in socket
    assert ("PartOf", "app.target") in socket
    service = directives(units["app@.service"])
    assert ("Requires", "app@%i.socket") in service
    assert ("PartOf", "app.target") in service
    assert ("Environment", "CPSYSD_INSTANCE=%i") in service
    wants = [value for key, value in directives(units["app.target"]) if key == "Wants"]
    assert wants == [f"app@{i}.{kind}" for i in (1, 2, 3) for kind in ("socket", "service")]
    assert units_to_enable(spec) == ["app.target"]
    assert analyze_instance(units, "2", tmp_path) == ""


def test_ports_mode_names_instances_by_port(tmp_path: Path) -> None:
    spec = spec_of(worker_mode="ports", listen=["127.0.0.1:9100", "[::1]:9100"])
    assert instance_names(spec) == ["9100", "9101", "9102"]
    units = render_units(spec, OPTIONS)
    socket = directives(units["app@.socket"])
    assert [v for k, v in socket if k == "ListenStream"] == ["127.0.0.1:%i", "[::1]:%i"]
    assert ("ReusePort", "yes") not in socket
    assert instance_listener(spec, spec.listeners[1], "9102").address == "[::1]:9102"
    assert "Wants=app@9102.service" in units["app.target"]
    assert analyze_instance(units, "9101", tmp_path) == ""


def test_ports_mode_refuses_listeners_on_different_ports() -> None:
    spec = spec_of(worker_mode="ports", listen=["8080", "8443"])
    with pytest.raises(SpecError, match="worker_mode"):
        render_units(spec, OPTIONS)


def test_unix_listeners_get_one_path_per_instance(tmp_path: Path) -> None:
    spec = spec_of(listen=["8080", "/run/app/app.sock=admin", "/run/app/raw=admin"])
    units = render_units(spec, OPTIONS)
    assert set(units) == {"app@.service", "app@.socket", "app-admin@.socket", "app.target"}
    admin = directives(units["app-admin@.socket"])
    streams = [v for k, v in admin if k == "ListenStream"]
    assert streams == ["/run/app/app-%i.sock", "/run/app/raw-%i"]
    assert ("ReusePort", "yes") not in admin  # SO_REUSEPORT means nothing for unix sockets
    assert ("Service", "app@%i.service") in admin
    service = directives(units["app@.service"])
    assert ("Requires", "app-admin@%i.socket") in service
    assert instance_listener(spec, spec.listeners[1], "3").path == "/run/app/app-3.sock"
    assert analyze_instance(units, "1", tmp_path) == ""


def test_too_long_unix_path_with_instance_is_refused() -> None:
    path = "/run/" + "x" * 97 + ".sock"  # 107 bytes: fits alone, not with "-3"
    spec = spec_of(listen=[path])
    with pytest.raises(SpecError, match="longer than 107"):
        render_units(spec, OPTIONS)


def test_percent_in_paths_is_not_a_specifier(tmp_path: Path) -> None:
    spec = spec_of(listen=["/run/app%d/s.sock"], description="50% of %n")
    units = render_units(spec, OPTIONS)
    assert "ListenStream=/run/app%%d/s-%i.sock" in units["app@.socket"]
    assert "Description=50%% of %%n (instance %i)" in units["app@.service"]
    assert analyze_instance(units, "1", tmp_path) == ""


@pytest.mark.parametrize(
    "fields",
    [
        {"network": False},
        {"hardening": "relaxed", "user": "www-data:www-data", "state_directory": True},
        {"environment": {"A": "x y", "B": "50%"}, "watchdog_sec": 0, "restart": "always"},
        {"listen": ["8443=https"], "tls": {"cert": "/etc/app/c.pem", "key": "/etc/app/k.pem"}},
    ],
)
def test_instance_service_is_the_single_service_plus_instance_lines(
    fields: dict[str, object], tmp_path: Path
) -> None:
    """Every directive of the single service (sandbox included) appears in the instance
    service, which only adds PartOf= and CPSYSD_INSTANCE and names the instance's sockets."""
    single = directives(render_units(spec_of(workers=1, **fields), OPTIONS)["app.service"])
    units = render_units(spec_of(**fields), OPTIONS)
    instance = directives(units["app@.service"])
    socket_names = {"app.socket", "app-https.socket"}
    expected = [
        (k, v.replace(".socket", "@%i.socket") if v in socket_names else v)
        for k, v in single
        if k != "Description"
    ]
    extra = [pair for pair in instance if pair not in expected]
    assert [pair for pair in expected if pair not in instance] == []
    assert sorted(k for k, _ in extra) == ["Description", "Environment", "PartOf"]
    for line in hardening_lines(spec_of(**fields), False):
        assert line in units["app@.service"]
    assert analyze_instance(units, "1", tmp_path) == ""


def test_user_mode_target_is_wanted_by_default_target(tmp_path: Path) -> None:
    units = render_units(spec_of(), RenderOptions("/home/u/app.toml", user_mode=True))
    assert ("WantedBy", "default.target") in directives(units["app.target"])
    assert "DynamicUser" not in units["app@.service"]


@pytest.mark.parametrize("network", [True, False])
def test_instances_keep_the_exposure_promise(network: bool) -> None:
    """cpsysd verify (systemd-analyze security) scores the instance like a single service."""
    single = verify_units(spec_of(workers=1, network=network)).exposure
    report = verify_units(spec_of(network=network))
    assert list(report.exposures) == ["app@1.service"]
    assert report.exposure == single


def test_restart_cli_refuses_a_bad_name(cpsysd_cmd: list[str]) -> None:
    result = subprocess.run(
        [*cpsysd_cmd, "restart", "../etc"], capture_output=True, text=True, check=False
    )
    assert result.returncode != 0
    assert result.stderr.startswith("cpsysd: error: app name '../etc' may only contain")
    assert result.stderr.count("\n") == 1


@pytest.mark.skipif(Path("/run/systemd/system").exists(), reason="only where systemd is not PID 1")
def test_restart_cli_without_systemd_is_one_line(cpsysd_cmd: list[str]) -> None:
    """Here PID 1 is not systemd: no systemctl is run, the error says why."""
    result = subprocess.run([*cpsysd_cmd, "restart", "hello"], capture_output=True, text=True)
    assert result.returncode != 0
    assert result.stderr.startswith("cpsysd: error: systemd is not running here")
    assert result.stderr.count("\n") == 1
