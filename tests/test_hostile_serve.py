"""Real ``cpsysd serve`` processes handed crafted descriptors and hostile supervisor variables:
a refusal is one line on stderr and exit status 3, never a traceback; odd NOTIFY_SOCKET /
WATCHDOG_* / CREDENTIALS_DIRECTORY / INVOCATION_ID values do not stop it serving; a listening
socket beyond LISTEN_FDS is never accepted from. Every process is stopped by its PID."""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.conftest import EXAMPLE
from tests.scalekit import stop_process

# Runs in the child: put the given descriptors at fds 3, 4, ... (None: closed), set LISTEN_PID
# to its own PID when asked ("SELF"), and exec cpsysd serve (exec keeps the PID).
LAUNCHER = """
import fcntl, json, os, sys
args = json.loads(sys.argv[1])
high = [None if fd is None else fcntl.fcntl(fd, fcntl.F_DUPFD, 100) for fd in args["fds"]]
for fd in args["fds"]:
    if fd is not None:
        os.close(fd)
for slot, fd in enumerate(high, start=3):
    if fd is None:
        try:
            os.close(slot)
        except OSError:
            pass
    else:
        os.dup2(fd, slot)
        os.close(fd)
env = {k: (str(os.getpid()) if v == "SELF" else v) for k, v in args["env"].items()}
os.execve(sys.executable, [sys.executable, "-m", "cpsysd", "serve", "-c", args["config"]], env)
"""


def description(tmp_path: Path, port: int) -> Path:
    path = tmp_path / "hostile.toml"
    path.write_text(
        f'name = "hostile"\nentry = "hello:Root"\nworking_directory = "{EXAMPLE}"\n'
        f'python = "{sys.executable}"\nlisten = ["127.0.0.1:{port}"]\n'
    )
    return path


def listening(port: int = 0) -> socket.socket:
    sock = socket.socket()
    sock.bind(("127.0.0.1", port))
    sock.listen()
    return sock


@contextmanager
def serve(
    config: Path, fds: list[int | None], env: dict[str, str], tmp_path: Path
) -> Iterator[subprocess.Popen[bytes]]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("LISTEN_", "NOTIFY_"))}
    args = {"fds": fds, "env": {**base, **env}, "config": str(config)}
    proc = subprocess.Popen(
        [sys.executable, "-c", LAUNCHER, json.dumps(args)],
        pass_fds=[fd for fd in fds if fd is not None],
        stdout=subprocess.DEVNULL,
        stderr=(tmp_path / "stderr").open("wb"),
        cwd=tmp_path,
    )
    try:
        yield proc
    finally:
        stop_process(proc, grace=30)


def answers(port: int, proc: subprocess.Popen[bytes], timeout: float = 60) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        try:
            conn.request("GET", "/")
            return conn.getresponse().status == 200
        except OSError:
            time.sleep(0.1)
        finally:
            conn.close()
    return False


def check_stderr(tmp_path: Path) -> str:
    text = (tmp_path / "stderr").read_bytes().decode("utf-8", "replace")
    assert "Traceback" not in text, text
    return text


@pytest.mark.parametrize(
    ("layout", "env", "expected"),
    [
        (["tcp"], {"LISTEN_PID": "1", "LISTEN_FDS": "1"}, "another process"),
        (["tcp"], {"LISTEN_PID": "SELF", "LISTEN_FDS": "9" * 5000}, "is not a number"),
        (["tcp"], {"LISTEN_PID": "-1", "LISTEN_FDS": "1"}, "not a process id"),
        (["tcp"], {"LISTEN_FDS": "1"}, "incomplete"),
        (["udp"], {"LISTEN_PID": "SELF", "LISTEN_FDS": "1"}, "UDP"),
        (["pipe"], {"LISTEN_PID": "SELF", "LISTEN_FDS": "1"}, "a pipe"),
        ([None], {"LISTEN_PID": "SELF", "LISTEN_FDS": "1"}, "not open"),
        (["tcp"], {"LISTEN_PID": "SELF", "LISTEN_FDS": "1", "LISTEN_FDNAMES": "a:b"}, "name(s)"),
        (["other"], {"LISTEN_PID": "SELF", "LISTEN_FDS": "1"}, "matches no listener"),
    ],
)
def test_bad_activation_is_one_clear_line(
    tmp_path: Path, layout: list[str | None], env: dict[str, str], expected: str
) -> None:
    with (
        listening() as described,
        listening() as other,
        socket.socket(type=socket.SOCK_DGRAM) as udp,
    ):
        read, write = os.pipe()
        kinds = {"tcp": described.fileno(), "other": other.fileno(), "udp": udp.fileno()}
        kinds["pipe"] = read
        fds = [None if kind is None else kinds[kind] for kind in layout]
        config = description(tmp_path, described.getsockname()[1])
        try:
            with serve(config, fds, env, tmp_path) as proc:
                code = proc.wait(timeout=60)
        finally:
            os.close(read)
            os.close(write)
    text = check_stderr(tmp_path)
    assert code == 3, text
    assert len(text.strip().splitlines()) == 1, text
    assert text.startswith("cpsysd: error: "), text
    assert expected in text, text


def test_a_socket_beyond_listen_fds_is_never_accepted(tmp_path: Path) -> None:
    with listening() as described, listening() as foreign:
        config = description(tmp_path, described.getsockname()[1])
        env = {"LISTEN_PID": "SELF", "LISTEN_FDS": "1", "LISTEN_FDNAMES": "http"}
        fds = [described.fileno(), foreign.fileno()]
        with serve(config, fds, env, tmp_path) as proc:
            assert answers(described.getsockname()[1], proc), check_stderr(tmp_path)
            knock = socket.create_connection(foreign.getsockname(), timeout=5)
            assert answers(described.getsockname()[1], proc)  # served meanwhile
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=30) == 0
        foreign.settimeout(5)
        conn, _ = foreign.accept()  # still queued: cpsysd serve never accepted it
        conn.close()
        knock.close()
    check_stderr(tmp_path)


@pytest.mark.parametrize(
    "env",
    [
        {"NOTIFY_SOCKET": "/nonexistent/notify", "WATCHDOG_USEC": "abc"},
        {"NOTIFY_SOCKET": "@nobody-listens-here", "WATCHDOG_USEC": "9" * 30},
        {"NOTIFY_SOCKET": "relative/socket", "WATCHDOG_USEC": "9" * 5000, "INVOCATION_ID": "x"},
        {"NOTIFY_SOCKET": "/" + "x" * 300, "WATCHDOG_USEC": "1000000", "WATCHDOG_PID": "1"},
        {"NOTIFY_SOCKET": "FILE", "WATCHDOG_USEC": "-5", "CREDENTIALS_DIRECTORY": "/nonexistent"},
        {"NOTIFY_SOCKET": "STREAM", "WATCHDOG_USEC": "1", "CREDENTIALS_DIRECTORY": "FILE"},
        {"NOTIFY_SOCKET": "vsock:2:1234", "CREDENTIALS_DIRECTORY": "relative"},
        {"NOTIFY_SOCKET": "", "WATCHDOG_USEC": "", "CREDENTIALS_DIRECTORY": ""},
    ],
)
def test_odd_supervisor_variables_do_not_stop_serving(tmp_path: Path, env: dict[str, str]) -> None:
    plain = tmp_path / "plain-file"
    plain.write_text("not a socket\n")
    stream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stream.bind(str(tmp_path / "stream.sock"))
    stream.listen()
    files = {"FILE": str(plain), "STREAM": str(tmp_path / "stream.sock")}
    env = {key: files.get(value, value) for key, value in env.items()}
    with stream, listening() as described:
        config = description(tmp_path, described.getsockname()[1])
        activation = {"LISTEN_PID": "SELF", "LISTEN_FDS": "1", "LISTEN_FDNAMES": "http"}
        with serve(config, [described.fileno()], {**activation, **env}, tmp_path) as proc:
            assert answers(described.getsockname()[1], proc), check_stderr(tmp_path)
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=30) == 0, check_stderr(tmp_path)
    check_stderr(tmp_path)
