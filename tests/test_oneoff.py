"""``cpsysd run``: the transient unit's properties come from the units cpsysd really renders
(the real end-to-end run is tests/e2e/test_e2e_ops.py)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from cpsysd.description.load import AppSpec, parse_spec
from cpsysd.errors import CommandError
from cpsysd.host.oneoff import (
    ServiceUnit,
    oneoff_argv,
    oneoff_properties,
    parse_unit_settings,
    resolve_specifiers,
)
from cpsysd.render.units import RenderOptions, render_units

OPTIONS = RenderOptions("/var/lib/cpsysd/app.toml")
PYTHON = "/opt/app/venv/bin/python"


def spec_of(**fields: object) -> AppSpec:
    base = {"name": "app", "entry": "app:Root", "python": PYTHON, "state_directory": True}
    return parse_spec({**base, **fields}, "/srv/app")


def service_of(spec: AppSpec, drop_in: str = "") -> ServiceUnit:
    """What read_service makes of ``systemctl cat`` for the rendered units (+ a drop-in)."""
    units = render_units(spec, OPTIONS)
    file, unit = (
        ("app@.service", "app@1.service") if spec.workers > 1 else ("app.service", "app.service")
    )
    text = f"# /etc/systemd/system/{file}\n{units[file]}"
    if drop_in:
        text += f"\n# /etc/systemd/system/{file}.d/local.conf\n{drop_in}"
    settings = parse_unit_settings(text)
    return ServiceUnit(unit, tuple(settings), PYTHON)


def test_the_sandbox_and_state_come_along_the_life_cycle_does_not() -> None:
    props = oneoff_properties(service_of(spec_of(network=False)), "app")
    keys = [prop.partition("=")[0] for prop in props]
    for gone in ("Type", "ExecStart", "ExecReload", "Restart", "WatchdogSec", "TimeoutStopSec"):
        assert gone not in keys
    for kept in (
        "DynamicUser=yes",
        "ProtectSystem=strict",
        "ProtectHome=yes",
        "PrivateNetwork=yes",
        "StateDirectory=app",
        "WorkingDirectory=/srv/app",
        "UMask=0077",
    ):
        assert kept in props
    # both filter lines, in the unit's order: the second narrows the first
    filters = [prop for prop in props if prop.startswith("SystemCallFilter=")]
    assert filters == [
        "SystemCallFilter=@system-service",
        "SystemCallFilter=~@privileged @resources",
    ]
    # the service's dynamic user by name, so StateDirectory stays its
    assert props[-1] == "User=app"
    assert props[0] == f"Environment=PATH=/opt/app/venv/bin:{props[0].split(':', 1)[1]}"


def test_a_worker_template_is_read_as_its_first_instance() -> None:
    props = oneoff_properties(service_of(spec_of(workers=3)), "app")
    assert "Environment=CPSYSD_INSTANCE=1" in props
    assert not any("%" in prop for prop in props)
    assert "User=app" in props


def test_a_drop_in_counts_and_a_given_user_is_kept() -> None:
    drop_in = "[Service]\nUser=web\nEnvironment=A=1 \\\n  B=2\n"
    props = oneoff_properties(service_of(spec_of(), drop_in), "app")
    assert "User=web" in props
    assert "User=app" not in props
    # a continuation line joins its assignment (systemd.syntax(7))
    assert [p.split() for p in props if p.startswith("Environment=A")] == [
        ["Environment=A=1", "B=2"]
    ]


def test_specifiers_are_resolved_for_the_unit() -> None:
    assert resolve_specifiers("%i|%I|%n|%N|%p|%%i|%h", "web@3.service") == (
        "3|3|web@3.service|web@3|web|%i|%h"
    )


@pytest.mark.parametrize(("tty", "mode"), [(True, "--pty"), (False, "--pipe")])
def test_argv_waits_collects_and_uses_the_service_interpreter(tty: bool, mode: str) -> None:
    command = ["python", "manage.py", "migrate", "--noinput"]
    argv = oneoff_argv(service_of(spec_of()), "app", command, user=False, tty=tty)
    assert argv[:5] == ["systemd-run", "--quiet", "--wait", "--collect", mode]
    assert "--service-type=exec" in argv
    assert argv[argv.index("--") :] == ["--", PYTHON, "manage.py", "migrate", "--noinput"]
    assert argv[argv.index("-p") + 1].startswith("Environment=PATH=")
    user_argv = oneoff_argv(service_of(spec_of()), "app", ["ls"], user=True, tty=tty)
    assert user_argv[:2] == ["systemd-run", "--user"]
    assert user_argv[-2:] == ["--", "ls"]


def test_setenv_comes_last_and_names_are_checked() -> None:
    service = service_of(spec_of())
    argv = oneoff_argv(service, "app", ["ls"], user=False, tty=False, setenv=["A=1", "SECRET"])
    assert argv[-6:] == ["--setenv", "A=1", "--setenv", "SECRET", "--", "ls"]
    with pytest.raises(CommandError, match="not an environment variable name"):
        oneoff_argv(service, "app", ["ls"], user=False, tty=False, setenv=["A B=1"])


def test_no_command_is_an_error() -> None:
    with pytest.raises(CommandError, match="no command to run"):
        oneoff_argv(service_of(spec_of()), "app", [], user=False, tty=False)


@pytest.mark.skipif(Path("/run/systemd/system").exists(), reason="only where systemd is not PID 1")
def test_run_cli_without_systemd_is_one_line(cpsysd_cmd: list[str]) -> None:
    result = subprocess.run(
        [*cpsysd_cmd, "run", "hello", "--", "python", "-m", "x", "--user"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 1
    assert result.stderr.startswith("cpsysd: error: systemd is not running here")
    assert result.stderr.count("\n") == 1


def test_run_cli_refuses_a_bad_name(cpsysd_cmd: list[str]) -> None:
    result = subprocess.run(
        [*cpsysd_cmd, "run", "../etc", "--", "true"], capture_output=True, text=True, check=False
    )
    assert result.returncode == 1
    assert result.stderr.startswith("cpsysd: error: app name '../etc' may only contain")
