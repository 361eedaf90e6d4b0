"""The supervisord program section: parsed by supervisor's own config reader into exactly the
intended command and environment, and a real supervisord that starts, restarts and stops the app."""

from __future__ import annotations

import signal
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from supervisor.options import ServerOptions

from cpsysd.errors import SpecError
from cpsysd.spec import AppSpec, parse_spec
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
