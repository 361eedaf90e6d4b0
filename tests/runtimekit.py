"""Helpers for the tests of ``cpsysd serve`` (tests/test_runtime_*.py): a test app, description
files, real processes run directly or under the real ``systemd-socket-activate``, a real
AF_UNIX datagram socket receiving sd_notify messages, and a launcher that passes crafted
descriptors. Every process is stopped by its PID, also when a test fails."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
CPSYSD = [PYTHON, "-m", "cpsysd"]

# The test app: what the server tells it about the client, and handlers to be slow or hang.
APP_SOURCE = """
import json, os, socket, threading, time
import cherrypy

RELEASE = threading.Event()

class Root:
    @cherrypy.expose
    def index(self):
        return cherrypy.request.app.config.get("app", {}).get("greeting", "hello") + "\\n"

    @cherrypy.expose
    def whoami(self):
        conn = threading.current_thread().conn  # cheroot's worker thread knows its connection
        sock = getattr(conn.socket, "_sock", conn.socket)
        nodelay = None
        if sock.family != socket.AF_UNIX:
            nodelay = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
        env = cherrypy.request.wsgi_environ
        cherrypy.response.headers["Content-Type"] = "application/json"
        return json.dumps({
            "ip": cherrypy.request.remote.ip, "port": cherrypy.request.remote.port,
            "scheme": cherrypy.request.scheme, "nodelay": nodelay,
            "peer_pid": env.get("X_REMOTE_PID"), "peer_uid": env.get("X_REMOTE_UID"),
            "pid": os.getpid(), "host": cherrypy.request.headers.get("Host"),
            "env_listen": [k for k in os.environ if k.startswith("LISTEN_")],
        }).encode()

    @cherrypy.expose
    def slow(self, seconds="1"):
        open("slow-started", "w").close()  # in the working directory: tests wait for it
        time.sleep(float(seconds))
        return "slept " + seconds + " s\\n" + "x" * 100000 + "\\nend\\n"

    @cherrypy.expose
    def hang(self, seconds="60"):
        RELEASE.wait(float(seconds))
        return "released\\n"
"""

APP_CONF = """[global]
server.thread_pool = 2

[app]
greeting = "{greeting}"
"""


def write_app(
    directory: Path,
    listen: Sequence[str | dict[str, Any]],
    greeting: str = "hello",
    extra: str = "",
    app_source: str = APP_SOURCE,
    entry: str = "testapp:Root",
) -> Path:
    """Write the test app, its CherryPy config and a description; return the description."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "testapp.py").write_text(app_source)
    (directory / "app.conf").write_text(APP_CONF.format(greeting=greeting))
    items = ", ".join(
        json.dumps(item)
        if isinstance(item, str)
        else "{ " + ", ".join(f"{k} = {json.dumps(v)}" for k, v in item.items()) + " }"
        for item in listen
    )
    description = directory / "cpsysd.toml"
    description.write_text(
        f'name = "rt"\nentry = "{entry}"\nconfig = "app.conf"\nlisten = [{items}]\n'
        f"timeout_stop_sec = 10\n{extra}\n"
    )
    return description


def free_ports(count: int) -> list[int]:
    """``count`` distinct ports free on [::] and 0.0.0.0 right now. All are bound before any is
    released: calling free_port() twice may return the same port, closed by the first call."""
    with contextlib.ExitStack() as stack:
        ports = []
        for _ in range(count):
            sock = stack.enter_context(socket.socket(socket.AF_INET6, socket.SOCK_STREAM))
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
            sock.bind(("::", 0))
            ports.append(int(sock.getsockname()[1]))
        return ports


def free_port() -> int:
    return free_ports(1)[0]


def socket_activate(
    listen: Sequence[str],
    command: Sequence[str],
    fdnames: Sequence[str] = (),
    env: dict[str, str] | None = None,
) -> list[str]:
    """argv running ``command`` under the real systemd-socket-activate. It starts the command
    on the first connection and passes only LISTEN_* and the -E variables."""
    argv = ["systemd-socket-activate"]
    for address in listen:
        argv += ["-l", address]
    if fdnames:
        argv.append("--fdname=" + ":".join(fdnames))
    for key, value in (env or {}).items():
        argv += ["-E", f"{key}={value}"]
    return argv + list(command)


class Proc:
    """A real process with stdout+stderr in a file; stopped (SIGTERM, then SIGKILL) by PID."""

    def __init__(
        self,
        argv: Sequence[str],
        log: Path,
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
    ) -> None:
        self.log = log
        self._out = open(log, "wb")  # noqa: SIM115 - closed in stop()
        full_env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("LISTEN_", "NOTIFY_", "WATCHDOG_"))
        }
        full_env.update(env or {})
        self.popen = subprocess.Popen(
            list(argv), stdout=self._out, stderr=subprocess.STDOUT, env=full_env, cwd=cwd
        )
        self.pid = self.popen.pid

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def signal(self, signum: int) -> None:
        if self.popen.poll() is None:
            os.kill(self.pid, signum)

    def wait(self, timeout: float = 20) -> int:
        return self.popen.wait(timeout)

    def stop(self) -> int | None:
        try:
            if self.popen.poll() is None:
                os.kill(self.pid, signal.SIGTERM)
                try:
                    self.popen.wait(15)
                except subprocess.TimeoutExpired:
                    os.kill(self.pid, signal.SIGKILL)
                    self.popen.wait(5)
        finally:
            self._out.close()
        return self.popen.returncode


@contextlib.contextmanager
def running(argv: Sequence[str], log: Path, env: dict[str, str] | None = None) -> Iterator[Proc]:
    proc = Proc(argv, log, env)
    try:
        yield proc
    finally:
        proc.stop()


class UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float = 20) -> None:
        super().__init__("localhost", timeout=timeout)
        self.unix_path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self.unix_path)


def connection(address: str, timeout: float = 20) -> http.client.HTTPConnection:
    """``host:port``, ``[v6]:port`` or a unix socket path."""
    if address.startswith("/"):
        return UnixHTTPConnection(address, timeout)
    host, port = address.rsplit(":", 1)
    return http.client.HTTPConnection(host.strip("[]"), int(port), timeout=timeout)


def get(address: str, path: str, timeout: float = 20) -> tuple[int, bytes]:
    conn = connection(address, timeout)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def get_when_up(address: str, path: str, timeout: float = 20) -> tuple[int, bytes]:
    """GET, retrying while nothing listens yet (a launcher still setting up its socket)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return get(address, path, timeout)
        except (ConnectionRefusedError, FileNotFoundError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def wait_listening(address: str, timeout: float = 20) -> None:
    """Until ``address`` (PORT, HOST:PORT, [V6]:PORT or a unix path) accepts connections.
    Under socket activation the first connection starts the service, as any client would."""
    if address.startswith("/"):
        connect_unix_when_up(address, timeout).close()
    else:
        connect_when_up(int(address.rsplit(":", 1)[-1]), timeout).close()


def connect_unix_when_up(path: str, timeout: float = 20) -> socket.socket:
    """A connection to the unix socket ``path``, retried while it is missing or not listening
    yet: systemd-socket-activate creates the file at bind() and listens only after that."""
    deadline = time.monotonic() + timeout
    while True:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(timeout)
        try:
            sock.connect(path)
            return sock
        except BaseException as err:
            sock.close()
            retry = isinstance(err, (ConnectionRefusedError, FileNotFoundError))
            if not retry or time.monotonic() > deadline:
                raise
        time.sleep(0.05)


def connect_when_up(port: int, timeout: float = 20) -> socket.socket:
    """A TCP connection to 127.0.0.1:port, retried while nothing listens there yet."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return socket.create_connection(("127.0.0.1", port), timeout=timeout)
        except ConnectionRefusedError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def get_json(address: str, path: str = "/whoami") -> dict[str, Any]:
    status, body = get_when_up(address, path)
    assert status == 200, body
    result: dict[str, Any] = json.loads(body)
    return result


def wait_for(predicate: Callable[[], object], timeout: float = 20, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


class NotifyReceiver:
    """A real AF_UNIX datagram socket to give as NOTIFY_SOCKET; records every message."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.sock.settimeout(0.05)
        self.messages: list[dict[str, str]] = []
        self.times: list[float] = []

    def poll(self) -> None:
        while True:
            try:
                data = self.sock.recv(65536)
            except (TimeoutError, BlockingIOError):
                return
            fields = dict(line.split("=", 1) for line in data.decode().splitlines() if "=" in line)
            self.messages.append(fields)
            self.times.append(time.monotonic())

    def wait_for(
        self, key: str, value: str | None = None, timeout: float = 20, start: int = 0
    ) -> int:
        """Index of the first message from ``start`` on that has ``key`` (= ``value``)."""
        deadline = time.monotonic() + timeout
        while True:
            self.poll()
            for index in range(start, len(self.messages)):
                message = self.messages[index]
                if key in message and (value is None or message[key] == value):
                    return index
            if time.monotonic() > deadline:
                raise AssertionError(f"no {key}={value} notification; got {self.messages}")
            time.sleep(0.01)

    def states(self) -> list[str]:
        """The messages' state keys in order, e.g. ['READY', 'RELOADING', 'READY', 'STOPPING']."""
        self.poll()
        order = ("READY", "RELOADING", "STOPPING", "WATCHDOG", "EXTEND_TIMEOUT_USEC")
        return [next((k for k in order if k in m), "STATUS") for m in self.messages]

    def close(self) -> None:
        self.sock.close()


# A launcher that passes crafted descriptors at fd 3.. and execs cpsysd serve with LISTEN_*.
LAUNCHER = r"""
import json, os, socket, sys
spec = json.loads(sys.argv[1])
objects = []
for n, kind in enumerate(spec["fds"]):
    if kind == "pipe":
        r, w = os.pipe(); fd = r; objects.append(w)
    elif kind == "file":
        fd = os.open(sys.executable, os.O_RDONLY)
    elif kind == "udp":
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind(("127.0.0.1", 0)); fd = s.detach()
    elif kind == "tcp-unlistened":
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.bind(("127.0.0.1", 0)); fd = s.detach()
    elif kind.startswith("tcp:"):
        s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        s.bind(("::", int(kind[4:]))); s.listen(16); fd = s.detach()
    elif kind.startswith("unix:"):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.bind(kind[5:]); s.listen(16); fd = s.detach()
    target = 3 + n
    if fd != target:
        os.dup2(fd, target); os.close(fd)
    os.set_inheritable(target, True)
env = dict(os.environ)
env["LISTEN_PID"] = str(os.getpid()) if spec.get("pid", "self") == "self" else spec["pid"]
env["LISTEN_FDS"] = spec.get("count", str(len(spec["fds"])))
if "names" in spec:
    env["LISTEN_FDNAMES"] = spec["names"]
for key in spec.get("unset", []):
    env.pop(key, None)
os.execve(sys.executable, [sys.executable, "-m", "cpsysd", "serve", *spec["args"]], env)
"""


def launch_with_fds(fds: Sequence[str], args: Sequence[str], **options: Any) -> list[str]:
    """argv of the launcher: ``fds`` are 'pipe', 'file', 'udp', 'tcp-unlistened', 'tcp:PORT',
    'unix:PATH'; options: pid ('self' or a number), count (LISTEN_FDS text), names, unset."""
    spec = {"fds": list(fds), "args": list(args), **options}
    return [PYTHON, "-c", LAUNCHER, json.dumps(spec)]
