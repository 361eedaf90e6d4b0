"""The supervisord program section: parsed by supervisor's own config reader into exactly the
intended command and environment, and a real supervisord that starts, restarts and stops the app."""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scalekit import free_port_run, running, wait_for_port, whoami
from supervisor.options import ServerOptions

from cpsysd.description.load import AppSpec, load_spec, parse_spec
from cpsysd.errors import SpecError
from cpsysd.targets.supervisord import render_supervisord

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


def parsed_programs(directory: Path, program: str) -> list[Any]:
    """The ProcessConfigs supervisord builds from ``program`` (its real parser, nothing started)."""
    options = ServerOptions()
    options.realize(args=["-c", str(supervisord_conf(directory, program))])
    [group] = options.process_group_configs
    return list(group.process_configs)


def parsed_program(directory: Path, program: str) -> Any:
    [config] = parsed_programs(directory, program)
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


def test_workers_become_numprocs_with_the_systemd_instance_numbers(tmp_path: Path) -> None:
    spec = spec_of(workers=3, listen=["127.0.0.1:8080", "/run/hello/app.sock"])
    configs = parsed_programs(tmp_path, render_supervisord(spec, "/etc/h.toml", str(tmp_path)))
    serve = f"{sys.executable} -m cpsysd serve -c /etc/h.toml --instance"
    assert [(c.name, c.command) for c in configs] == [
        (f"hello-{i}", f"{serve} {i}") for i in (1, 2, 3)
    ]
    assert [c.stdout_logfile for c in configs] == [f"{tmp_path}/hello-{i}.log" for i in (1, 2, 3)]


def test_ports_mode_processes_are_named_by_port(tmp_path: Path) -> None:
    spec = spec_of(workers=2, worker_mode="ports", listen=["127.0.0.1:9100", "[::1]:9100"])
    text = render_supervisord(spec, "/etc/h.toml", str(tmp_path))
    configs = parsed_programs(tmp_path, text)
    assert [c.name for c in configs] == ["hello-9100", "hello-9101"]
    assert [c.command.split()[-1] for c in configs] == ["9100", "9101"]
    assert "one process serves" not in text


def test_single_worker_has_no_numprocs(tmp_path: Path) -> None:
    text = render_supervisord(spec_of(), "/etc/h.toml", str(tmp_path))
    assert "numprocs" not in text
    assert "--instance" not in text
    assert "process_num" not in text


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


@settings(
    max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(path=_TEXT.map(lambda text: "/etc/" + text))
def test_worker_commands_arrive_intact_or_are_refused(path: str, tmp_path: Path) -> None:
    """Only the generator's own %(process_num)d is expanded; user text arrives as written."""
    try:
        text = render_supervisord(spec_of(workers=2), path, str(tmp_path))
    except SpecError:
        return
    configs = parsed_programs(tmp_path, text)
    argv = [sys.executable, "-m", "cpsysd", "serve", "-c", path, "--instance"]
    assert [shlex.split(c.command) for c in configs] == [[*argv, "1"], [*argv, "2"]]


@pytest.mark.parametrize("workers", [1, 2])
def test_log_dir_with_percent_is_refused(workers: int) -> None:
    """supervisord expands stdout_logfile twice: no escaping of % would hold."""
    with pytest.raises(SpecError, match=r"^log_dir: '/var/log/50%' contains %"):
        render_supervisord(spec_of(workers=workers), "/etc/h.toml", "/var/log/50%")


def test_worker_log_files_keep_the_log_dir(tmp_path: Path) -> None:
    log_dir = tmp_path / "a b(1)"
    log_dir.mkdir()
    text = render_supervisord(spec_of(workers=2), "/etc/h.toml", str(log_dir))
    configs = parsed_programs(tmp_path, text)
    assert [c.stdout_logfile for c in configs] == [f"{log_dir}/hello-{i}.log" for i in (1, 2)]


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
    """The PID answering on ``port``, or None if nothing does (refused, or reset by a process
    being killed). The timeout is generous: `cpsysd serve` listens before it imports CherryPy
    and the app, so a first answer on a loaded machine can take seconds. Any other error fails."""
    try:
        return int(whoami("127.0.0.1", port, timeout=20)["pid"])
    except (ConnectionRefusedError, ConnectionResetError):
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


def _status_pids(conf: Path) -> dict[str, int]:
    """``supervisorctl status``: namespec -> PID of every RUNNING process."""
    pids = {}
    for line in _ctl(conf, "status").splitlines():
        fields = line.replace(",", " ").split()
        if len(fields) >= 4 and fields[1] == "RUNNING" and fields[2] == "pid":
            pids[fields[0]] = int(fields[3])
    return pids


def _workers_conf(tmp_path: Path, listen: str, mode: str) -> Path:
    """A supervisord.conf running the example app as 2 workers in ``mode`` on ``listen``."""
    description = tmp_path / "hello.toml"
    description.write_text(
        f'name = "hello"\nentry = "hello:Root"\npython = "{sys.executable}"\n'
        f'working_directory = "{REPO}/examples/hello"\nlisten = ["{listen}"]\n'
        f'workers = 2\nworker_mode = "{mode}"\n'
    )
    program = render_supervisord(load_spec(description), str(description), str(tmp_path))
    return supervisord_conf(tmp_path, program)


def _kill_leftovers(pids: set[int]) -> None:
    """Should supervisord have left an app process behind: kill it by PID (ours: cpsysd)."""
    for pid in pids:
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if b"cpsysd" in cmdline:
            os.kill(pid, signal.SIGKILL)


def _reaped(pid: int) -> bool:
    """Gone for good. A zombie leader is not enough: its other threads may still hold the
    listening socket, and connections the kernel queues there are reset when it closes
    (SO_REUSEPORT does not move them to the other sockets without tcp_migrate_req)."""
    return not Path(f"/proc/{pid}").exists()


@pytest.mark.slow
def test_real_supervisord_runs_reuseport_workers_on_one_port(tmp_path: Path, port: int) -> None:
    conf = _workers_conf(tmp_path, f"127.0.0.1:{port}", "reuseport")
    seen_pids: set[int] = set()
    try:
        with running([str(SUPERVISORD), "-c", str(conf)], tmp_path / "supervisord.out") as daemon:
            wait_for_port("127.0.0.1", port, timeout=30, proc=daemon)
            _wait(lambda: len(_status_pids(conf)) == 2, "both processes RUNNING", timeout=30)
            pids = _status_pids(conf)
            seen_pids |= set(pids.values())
            assert sorted(pids) == ["hello:hello-1", "hello:hello-2"]
            assert len(set(pids.values())) == 2
            answered: set[int | None] = set()
            for _ in range(200):  # the kernel spreads new connections over both sockets
                answered.add(_answers(port))
                if answered == set(pids.values()):
                    break
            assert answered == set(pids.values())

            victim, survivor = pids["hello:hello-1"], pids["hello:hello-2"]
            os.kill(victim, signal.SIGKILL)
            _wait(lambda: _reaped(victim), "supervisord to reap the killed process")
            after: list[int] = []
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and len(set(after) - {survivor}) == 0:
                # Every request is answered: by the survivor, or by the restarted process
                # (whose socket may take connections while it still imports the app).
                after.append(int(whoami("127.0.0.1", port, timeout=20)["pid"]))
            assert survivor in after, after
            restarted = set(after) - {survivor}
            assert len(restarted) == 1, after
            assert victim not in restarted
            _wait(lambda: len(_status_pids(conf)) == 2, "both RUNNING again", timeout=30)
            now = _status_pids(conf)
            seen_pids |= set(now.values())
            assert now == {"hello:hello-1": restarted.pop(), "hello:hello-2": survivor}

            assert _ctl(conf, "stop", "hello:*").count("stopped") == 2
            assert _answers(port) is None
            for pid in now.values():
                _wait(lambda pid=pid: _reaped(pid), f"process {pid} to end")  # type: ignore[misc]
    finally:
        _kill_leftovers(seen_pids)
    assert "exited: hello-1 (terminated by SIGKILL" in (tmp_path / "supervisord.log").read_text()


@pytest.mark.slow
def test_real_supervisord_runs_ports_workers_each_on_its_port(tmp_path: Path) -> None:
    first = free_port_run(2)
    conf = _workers_conf(tmp_path, f"127.0.0.1:{first}", "ports")
    seen_pids: set[int] = set()
    try:
        with running([str(SUPERVISORD), "-c", str(conf)], tmp_path / "supervisord.out") as daemon:
            for port in (first, first + 1):
                wait_for_port("127.0.0.1", port, timeout=30, proc=daemon)
            _wait(lambda: len(_status_pids(conf)) == 2, "both processes RUNNING", timeout=30)
            pids = _status_pids(conf)
            seen_pids |= set(pids.values())
            for port in (first, first + 1):  # each process answers on its own port only
                assert {_answers(port) for _ in range(5)} == {pids[f"hello:hello-{port}"]}
            assert len(set(pids.values())) == 2
            assert _ctl(conf, "stop", "hello:*").count("stopped") == 2
            assert _answers(first) is None
            assert _answers(first + 1) is None
    finally:
        _kill_leftovers(seen_pids)
