"""The supervisord program section: parsed by supervisor's own config reader into exactly the
intended command and environment, and a real supervisord that starts, restarts and stops the app."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scalekit import running, wait_for_port, whoami
from supervisor.options import ServerOptions

from cpsysd.errors import SpecError
from cpsysd.spec import AppSpec, load_spec, parse_spec
from cpsysd.supervisord import render_supervisord

REPO = Path(__file__).resolve().parent.parent
SUPERVISORD = Path(sys.executable).parent / "supervisord"
SUPERVISORCTL = Path(sys.executable).parent / "supervisorctl"


def spec_of(**fields: object) -> AppSpec:
    base = {"name": "hello", "entry": "hello:Root", "python": sys.executable}
    return parse_spec({**base, **fields}, str(REPO / "examples" / "hello"))


def supervisord_conf(directory: Path, program: str) -> Path:
    """A complete supervisord.conf in ``directory``: foreground, a unix control socket there,
    every log and pid file there, the program section included like /etc/supervisor/conf.d."""
    (directory / "program.conf").write_text(program)
    conf = directory / "supervisord.conf"
    conf.write_text(
        "[supervisord]\nnodaemon=true\n"
        f"logfile={directory}/supervisord.log\npidfile={directory}/supervisord.pid\n"
        f"childlogdir={directory}\n"
        f"[unix_http_server]\nfile={directory}/supervisor.sock\n"
        f"[supervisorctl]\nserverurl=unix://{directory}/supervisor.sock\n"
        "[rpcinterface:supervisor]\n"
        "supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface\n"
        f"[include]\nfiles = {directory}/program.conf\n"
    )
    return conf


def parsed_program(directory: Path, program: str) -> object:
    """The ProcessConfig supervisord builds from ``program`` (its real parser, nothing started)."""
    options = ServerOptions()
    options.realize(args=["-c", str(supervisord_conf(directory, program))])
    [group] = options.process_group_configs
    [config] = group.process_configs
    return config


def test_supervisord_reads_the_section_as_intended(tmp_path: Path) -> None:
    env = {"A": "x, y#z;w", "B": "50%(hare)s %d %%", "C": "it's", "D": 'say "hi" now', "E": ""}
    spec = spec_of(user="nobody", environment=env, timeout_stop_sec=7)
    text = render_supervisord(spec, "/etc/cpsysd/hello.toml", str(tmp_path))
    config = parsed_program(tmp_path, text)
    assert config.name == "hello"
    assert config.command == f"{sys.executable} -m cpsysd serve -c /etc/cpsysd/hello.toml"
    assert config.environment == {"PYTHONUNBUFFERED": "1", **env}
    assert config.stopsignal == signal.SIGTERM
    assert config.stopwaitsecs == 7
    assert config.uid == 65534  # nobody
    assert config.directory == str(REPO / "examples" / "hello")
    assert config.stdout_logfile == f"{tmp_path}/hello.log"
    assert config.redirect_stderr is True
    assert config.autorestart is not False


_TEXT = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=20)


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(value=_TEXT)
def test_environment_values_arrive_intact_or_are_refused(value: str, tmp_path: Path) -> None:
    """Whatever printable value: supervisord gets exactly it, or rendering refuses it."""
    try:
        spec = spec_of(environment={"V": value})
        text = render_supervisord(spec, "/etc/cpsysd/hello.toml", str(tmp_path))
    except SpecError:
        return
    assert parsed_program(tmp_path, text).environment["V"] == value


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"environment": {"V": "a ;b"}}, "environment.V"),
        ({"environment": {"V": "both ' and \" quotes"}}, "environment.V"),
        ({"environment": {"V": "%(here)s"}}, "environment.V"),
        ({"environment_file": "/etc/default/hello"}, "environment_file"),
    ],
)
def test_unrepresentable_values_are_refused(fields: dict[str, object], field: str) -> None:
    with pytest.raises(SpecError, match=rf"^{field}:"):
        render_supervisord(spec_of(**fields), "/etc/cpsysd/hello.toml")


def _ctl(conf: Path, *args: str) -> str:
    result = subprocess.run(
        [str(SUPERVISORCTL), "-c", str(conf), *args], capture_output=True, text=True, timeout=30
    )
    return result.stdout


def _wait(predicate: object, what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def _answers(port: int) -> int | None:
    try:
        return int(whoami("127.0.0.1", port, timeout=2)["pid"])
    except OSError:
        return None


@pytest.mark.slow
def test_real_supervisord_starts_restarts_and_stops_the_app(tmp_path: Path, port: int) -> None:
    description = tmp_path / "hello.toml"
    description.write_text(
        f'name = "hello"\nentry = "hello:Root"\npython = "{sys.executable}"\n'
        f'working_directory = "{REPO}/examples/hello"\nlisten = ["127.0.0.1:{port}"]\n'
    )
    spec = load_spec(description)
    conf = supervisord_conf(tmp_path, render_supervisord(spec, str(description), str(tmp_path)))
    with running([str(SUPERVISORD), "-c", str(conf)], tmp_path / "supervisord.out") as daemon:
        wait_for_port("127.0.0.1", port, timeout=30, proc=daemon)
        first = _answers(port)
        assert first is not None
        _wait(lambda: "RUNNING" in _ctl(conf, "status", "hello"), "RUNNING (startsecs)")
        assert f"pid {first}," in _ctl(conf, "status", "hello")

        os.kill(first, signal.SIGKILL)  # the app dies; supervisord must bring it back
        _wait(lambda: _answers(port) not in (None, first), "the restarted app")
        second = _answers(port)
        assert second is not None
        _wait(lambda: "RUNNING" in _ctl(conf, "status", "hello"), "RUNNING again")
        assert f"pid {second}," in _ctl(conf, "status", "hello")

        assert "stopped" in _ctl(conf, "stop", "hello")
        assert _answers(port) is None
        assert "STOPPED" in _ctl(conf, "status", "hello")
        with pytest.raises(ProcessLookupError):
            os.kill(second, 0)  # the app process is gone, not just its socket
    assert "exited: hello (terminated by SIGKILL" in (tmp_path / "supervisord.log").read_text()


def test_generate_target_supervisord_writes_the_section(
    tmp_path: Path, cpsysd_cmd: list[str]
) -> None:
    description = tmp_path / "cpsysd.toml"
    description.write_text(
        f'name = "hello"\nentry = "hello:Root"\nworking_directory = "{REPO}/examples/hello"\n'
        'environment = { GREETING = "50% off; today" }\ntimeout_stop_sec = 12\n'
    )
    out = tmp_path / "conf.d"
    result = subprocess.run(
        [*cpsysd_cmd, "generate", "-c", str(description), "--target", "supervisord", "-o",
         str(out)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    text = (out / "hello.conf").read_text()
    # What the tests above parse with supervisord's reader (which also insists that the log
    # directory, /var/log/supervisor by default as in Debian's package, exists).
    assert text == render_supervisord(load_spec(description), str(description.resolve()))
    assert "stopwaitsecs=12\n" in text
    assert 'GREETING="50%% off; today"' in text
