"""The contenders: how each server is started on a loopback port.

* ``cpsysd serve`` on a socket passed by the real ``systemd-socket-activate``;
* N ``cpsysd serve`` (or plain CherryPy) processes on one port, each with its own SO_REUSEPORT
  socket, passed the way systemd passes a ``ReusePort=yes`` instance socket (see
  :func:`start_reuseport`);
* plain ``cherrypy.quickstart`` of the same app, binding its port itself;
* gunicorn (sync, gthread) and uWSGI serving the same app as WSGI (``bench/apps/wsgi_hello.py``).
"""

from __future__ import annotations

import os
import socket
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from benchlib import (
    BENCH,
    HELLO_TOML,
    PYTHON,
    VENV,
    Load,
    Procs,
    Samples,
    free_port,
    load,
    say,
    wait_http,
)

APPS = BENCH / "apps"
CPSYSD_SERVE = [PYTHON, "-m", "cpsysd", "serve", "-c", str(HELLO_TOML)]
# The same app in CherryPy's "production" environment, as wsgi_hello.py runs it under gunicorn
# and uWSGI: the scaling and overload sections compare servers, not environments.
CPSYSD_PRODUCTION = [
    PYTHON, "-m", "cpsysd", "serve", "-c", str(APPS / "production" / "cpsysd.toml")
]  # fmt: skip
PLAIN_CHERRYPY = [PYTHON, str(APPS / "plain_cherrypy.py")]


def activate_argv(
    port: int, argv: Sequence[str], env: dict[str, str] | None = None, fdname: str = "http"
) -> list[str]:
    """``systemd-socket-activate`` on 127.0.0.1:PORT, starting ``argv`` on the first connection.
    It passes on only PATH, TERM, USER and HOME of its environment, so ``env`` becomes -E."""
    passed = {k: os.environ[k] for k in ("PYTHONPATH",) if k in os.environ}
    setenv = [f"-E{name}={value}" for name, value in {**passed, **(env or {})}.items()]
    return [
        "systemd-socket-activate", "-l", f"127.0.0.1:{port}", f"--fdname={fdname}", *setenv, *argv
    ]  # fmt: skip


def start_activated(
    procs: Procs,
    port: int,
    argv: Sequence[str],
    env: dict[str, str] | None = None,
    fdname: str = "http",
) -> subprocess.Popen[bytes]:
    """A server under systemd-socket-activate, started by the first request (waited for here)."""
    proc = procs.start(activate_argv(port, argv, env, fdname))
    wait_http(port, tls=fdname == "https")
    return proc


def start_plain_cherrypy(
    procs: Procs, port: int, max_body: int | None = None
) -> subprocess.Popen[bytes]:
    """``max_body``: server.max_request_body_size in bytes instead of CherryPy's 100 MiB."""
    limit = [] if max_body is None else [str(max_body)]
    proc = procs.start([*PLAIN_CHERRYPY, str(port), *limit])
    wait_http(port)
    return proc


def reuseport_socket(port: int) -> socket.socket:
    """What a generated instance socket unit makes: ListenStream=, ReusePort=yes, NoDelay=yes,
    Backlog=1024 (systemd.socket(5))."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.bind(("127.0.0.1", port))
    sock.listen(1024)
    return sock


def start_reuseport(
    procs: Procs,
    port: int,
    argv: Sequence[str],
    count: int,
    env: dict[str, str] | None = None,
    fdname: str = "http",
) -> list[subprocess.Popen[bytes]]:
    """``count`` processes on one port, each passed its own SO_REUSEPORT socket as fd 3 with
    LISTEN_FDS=1, LISTEN_PID=its PID and LISTEN_FDNAMES (sd_listen_fds(3)): what systemd does
    for the ``NAME@i.socket`` units of ``worker_mode = "reuseport"``. systemd-socket-activate
    cannot set SO_REUSEPORT, hence ``apps/exec_with_fd3.py``."""
    started = []
    for _ in range(count):
        sock = reuseport_socket(port)
        fd = sock.fileno()
        try:
            started.append(
                procs.start(
                    [PYTHON, str(APPS / "exec_with_fd3.py"), str(fd), *argv],
                    env={"LISTEN_FDS": "1", "LISTEN_FDNAMES": fdname, **(env or {})},
                    pass_fds=[fd],
                )
            )
        finally:
            sock.close()
    for _ in range(4 * count):  # each process answers: reach all of them through the hash
        wait_http(port)
    return started


def gunicorn_argv(port: int, worker_class: str, workers: int = 2, threads: int = 1) -> list[str]:
    argv = [str(VENV / "bin" / "gunicorn"), "-b", f"127.0.0.1:{port}", "-w", str(workers)]
    argv.append("--no-control-socket")  # gunicorn >= 25 would create ~/.gunicorn otherwise
    argv += ["-k", worker_class, "--chdir", str(APPS), "--log-level", "warning"]
    # one access line per request (to stdout, /dev/null or the log), as cpsysd serve writes
    argv += ["--access-logfile", "-"]
    if worker_class == "gthread":
        argv += ["--threads", str(threads)]
    return [*argv, "wsgi_hello:application"]


def uwsgi_argv(port: int, processes: int = 2, listen: int = 100) -> list[str]:
    """Debian's uWSGI with its python3 plugin, using the venv's packages (same CherryPy). Its
    request log stays on (one line per request to stderr, as cpsysd serve writes its access
    log); ``listen`` is its backlog (uWSGI's default 100; the kernel caps it at somaxconn)."""
    return [
        "uwsgi", "--plugin", "python3", "--http-socket", f"127.0.0.1:{port}",
        "--master", "--processes", str(processes), "--virtualenv", str(VENV),
        "--chdir", str(APPS), "--module", "wsgi_hello:application",
        "--listen", str(listen), "--die-on-term", "--need-app", "--lazy-apps",
    ]  # fmt: skip


def start_wsgi_server(procs: Procs, argv: Sequence[str], port: int) -> subprocess.Popen[bytes]:
    proc = procs.start(argv)
    wait_http(port)
    return proc


@dataclass(frozen=True)
class Contender:
    """A named way to start a server on a port; ``start`` returns the PIDs whose process trees
    are the server (their CPU time is counted)."""

    name: str
    start: Callable[[Procs, int], list[int]]
    scheme: str = "http"


def compare(
    contenders: Sequence[Contender],
    connections: Sequence[int],
    reps: int,
    duration: float,
    headers: Sequence[str] = (),
) -> dict[tuple[str, int], list[Load]]:
    """Start every contender once, then run ``reps`` rounds; in each round every contender gets
    one wrk run per connection count, in an order rotated from round to round, so that each
    figure and its comparison are measured back to back under the same machine load."""
    results: dict[tuple[str, int], list[Load]] = {}
    with Procs() as procs:
        started = []
        for contender in contenders:
            port = free_port()
            started.append((contender, port, contender.start(procs, port)))
        for rep in range(reps):
            order = started[rep % len(started) :] + started[: rep % len(started)]
            for conns in connections:
                for contender, port, roots in order:
                    url = f"{contender.scheme}://127.0.0.1:{port}/"
                    result = load(url, roots, conns, duration, headers)
                    results.setdefault((contender.name, conns), []).append(result)
                    say(
                        f"   [{rep + 1}/{reps}] {contender.name} c={conns}: "
                        f"{result.wrk.rps:.0f} req/s, p99 {result.wrk.p99_ms:.1f} ms, "
                        f"{result.cpu_us:.0f} us CPU/req"
                    )
    return results


def rps(loads: Sequence[Load]) -> Samples:
    return Samples([item.wrk.rps for item in loads])


def p99(loads: Sequence[Load]) -> Samples:
    return Samples([item.wrk.p99_ms for item in loads])


def cpu(loads: Sequence[Load]) -> Samples:
    return Samples([item.cpu_us for item in loads])


# Ready-made contenders. ``pids`` of a socket-activated server: systemd-socket-activate execs it.
def _pids(procs: Sequence[subprocess.Popen[bytes]]) -> list[int]:
    return [proc.pid for proc in procs]


def cpsysd_activated(env: dict[str, str] | None = None, name: str = "cpsysd serve") -> Contender:
    return Contender(
        name, lambda procs, port: _pids([start_activated(procs, port, CPSYSD_SERVE, env)])
    )


PLAIN = Contender(
    "cherrypy.quickstart", lambda procs, port: _pids([start_plain_cherrypy(procs, port)])
)


PLAIN_ACTIVATED = Contender(
    "cherrypy.quickstart, socket-activated",
    lambda procs, port: _pids([start_activated(procs, port, PLAIN_CHERRYPY)]),
)


def reuseport_contender(
    name: str, argv: Sequence[str], count: int, env: dict[str, str] | None = None
) -> Contender:
    return Contender(
        name, lambda procs, port: _pids(start_reuseport(procs, port, argv, count, env))
    )


def wsgi_contender(name: str, argv_of_port: Callable[[int], list[str]]) -> Contender:
    return Contender(
        name, lambda procs, port: _pids([start_wsgi_server(procs, argv_of_port(port), port)])
    )
