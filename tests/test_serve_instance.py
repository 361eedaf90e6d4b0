"""``cpsysd serve --instance I`` (supervisord's workers): binds instance I's listeners where
systemd's ``NAME@I.socket`` would, SO_REUSEPORT included, and refuses what names no instance."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest
from scalekit import free_port_run

from cpsysd.description.instances import check_instance, instance_listener, instance_names
from cpsysd.description.load import AppSpec, parse_spec
from cpsysd.errors import CpsysdError
from cpsysd.render.workers import instance_listener as workers_instance_listener
from cpsysd.runtime.listeners import close_bindings
from cpsysd.runtime.main import acquire_listeners

REPO = Path(__file__).resolve().parent.parent


def spec_of(**fields: object) -> AppSpec:
    base = {"name": "hello", "entry": "hello:Root", "python": sys.executable, "workers": 2}
    return parse_spec({**base, **fields}, str(REPO / "examples" / "hello"))


def test_workers_module_keeps_its_names() -> None:
    assert workers_instance_listener is instance_listener


def test_reuseport_instances_share_the_port(port: int) -> None:
    spec = spec_of(listen=[f"127.0.0.1:{port}"])
    first = acquire_listeners(spec, "1")
    try:
        second = acquire_listeners(spec, "2")  # the same port, bound a second time
        try:
            for binding in (*first, *second):
                assert binding.sock.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT) == 1
                assert binding.sock.getsockname() == ("127.0.0.1", port)
        finally:
            close_bindings(second)
    finally:
        close_bindings(first)


def test_without_instance_the_port_is_not_shared(port: int) -> None:
    spec = spec_of(listen=[f"127.0.0.1:{port}"])
    bindings = acquire_listeners(spec)
    try:
        assert bindings[0].sock.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT) == 0
        with pytest.raises(CpsysdError, match=f"cannot listen on 127.0.0.1:{port}"):
            acquire_listeners(spec, "1")
    finally:
        close_bindings(bindings)


def test_unix_paths_get_the_instance_suffix(tmp_path: Path) -> None:
    spec = spec_of(listen=[str(tmp_path / "app.sock")])
    bindings = acquire_listeners(spec, "2")
    try:
        assert [binding.address for binding in bindings] == [str(tmp_path / "app-2.sock")]
    finally:
        close_bindings(bindings)
    assert not (tmp_path / "app-2.sock").exists()  # removed again, as RemoveOnStop=yes


def test_ports_mode_instance_is_its_port() -> None:
    first = free_port_run(2)
    spec = spec_of(listen=[f"127.0.0.1:{first}"], worker_mode="ports")
    assert instance_names(spec) == [str(first), str(first + 1)]
    bindings = acquire_listeners(spec, str(first + 1))
    try:
        assert bindings[0].sock.getsockname() == ("127.0.0.1", first + 1)
        assert bindings[0].sock.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT) == 0
    finally:
        close_bindings(bindings)


@pytest.mark.parametrize("instance", ["0", "3", "-1", "one", "01", " 1", ""])
def test_check_instance_refuses_what_names_no_instance(instance: str) -> None:
    with pytest.raises(CpsysdError, match=r": hello has instances 1 to 2 \(workers = 2, "):
        check_instance(spec_of(), instance)


def test_check_instance_refuses_an_app_without_workers() -> None:
    with pytest.raises(CpsysdError, match="workers = 1, so it has no instances"):
        check_instance(spec_of(workers=1), "1")


def _serve(
    cpsysd_cmd: list[str], tmp_path: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    description = tmp_path / "hello.toml"
    description.write_text(
        f'name = "hello"\nentry = "hello:Root"\nworking_directory = "{REPO}/examples/hello"\n'
        'workers = 2\nlisten = ["127.0.0.1:1"]\n'
    )
    return subprocess.run(
        [*cpsysd_cmd, "serve", "-c", str(description), *args],
        capture_output=True, text=True, check=False, timeout=60, env=env,
    )  # fmt: skip


@pytest.mark.parametrize("instance", ["0", "abc", "3", "-1"])
def test_serve_bad_instance_is_one_line(
    cpsysd_cmd: list[str], tmp_path: Path, instance: str
) -> None:
    result = _serve(cpsysd_cmd, tmp_path, "--instance", instance)
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        f"cpsysd: error: --instance '{instance}': hello has instances 1 to 2 "
        "(workers = 2, worker_mode = 'reuseport')"
    ]


def test_serve_refuses_instance_under_socket_activation(
    cpsysd_cmd: list[str], tmp_path: Path
) -> None:
    env = {"PATH": "/usr/bin:/bin", "LISTEN_PID": "1", "LISTEN_FDS": "1"}
    result = _serve(cpsysd_cmd, tmp_path, "--instance", "1", env=env)
    assert result.returncode == 1
    [line] = result.stderr.splitlines()
    assert line.startswith("cpsysd: error: --instance '1' refused: under socket activation")
