"""The production shape: nginx in front of the app over unix sockets, the same hello app behind
it three ways:

* the site ``cpsysd nginx -c FILE`` writes, in front of 2 ``cpsysd serve`` instances
  (``workers = 2``, a unix socket each: ``hello-1.sock``, ``hello-2.sock``, passed as fd 3 the
  way the ``hello@I.socket`` units pass them);
* the same site with its upstream pointed at gunicorn (sync, ``-w 2``) on a unix socket;
* nginx's ``uwsgi_pass`` to uWSGI (2 processes) speaking its own uwsgi protocol on a unix socket.

Each contender gets its own nginx (one worker process, its own prefix and config in a temp dir,
never the system service), started and ended by PID like every server here. The CPU per request
counts the whole stack: nginx and the app server.
"""

from __future__ import annotations

import re
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path

from benchlib import (
    COMMANDS,
    HELLO_DIR,
    PYTHON,
    VENV,
    Chart,
    Procs,
    Samples,
    Section,
    http_get,
    ratio_samples,
    wait_http,
)
from config import Config
from servers import APPS, Contender, compare, cpu, p99, rps

NGINX = "/usr/sbin/nginx"
CONNECTIONS = 64

NGINX_CONF = """\
worker_processes 1;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {prefix}/body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
    include {prefix}/site.conf;
}}
"""

UWSGI_SITE = """\
upstream uwsgi_hello {{
    server unix:{sock};
}}
server {{
    listen 127.0.0.1:{port};
    server_name _;
    location / {{
        include /etc/nginx/uwsgi_params;
        uwsgi_pass uwsgi_hello;
    }}
}}
"""


_TMP: list[Path] = []
BODIES: dict[int, bytes] = {}  # what GET / answered through each nginx: the same app everywhere


def _tmpdir() -> Path:
    """A temp dir removed when the section ends (run()), also on errors."""
    _TMP.append(Path(tempfile.mkdtemp(prefix="cpsysd-bench-prod-")))
    _TMP[-1].chmod(0o755)  # nginx's workers run as nobody and must reach the sockets
    return _TMP[-1]


def _description(tmp: Path, port: int) -> Path:
    """The example app with ``workers = 2`` on a unix socket, and an ``[nginx]`` table."""
    path = tmp / "cpsysd.toml"
    path.write_text(
        f'name = "hello"\nentry = "hello:Root"\nworking_directory = "{HELLO_DIR}"\n'
        f'config = "app.conf"\npython = "{PYTHON}"\nlisten = ["{tmp}/hello.sock"]\n'
        f"workers = 2\n\n[nginx]\nlisten = {port}\n"
    )
    return path


def cpsysd_site(description: Path, output: Path) -> str:
    """The site as ``cpsysd nginx`` writes it (the CLI, as a user runs it)."""
    argv = [PYTHON, "-m", "cpsysd", "nginx", "-c", str(description)]
    argv += ["--listen-host", "127.0.0.1", "-o", str(output)]
    COMMANDS.add(argv)
    subprocess.run(argv, check=True, capture_output=True, timeout=60, cwd="/")
    return output.read_text()


def _unix_listener(path: Path) -> socket.socket:
    """What a ``ListenStream=/path`` socket unit makes (Backlog=1024 as the generated units)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(str(path))
    path.chmod(0o666)  # systemd's SocketMode= default: nginx's workers (nobody) connect
    sock.listen(1024)
    return sock


def start_nginx(procs: Procs, prefix: Path, site: str, port: int) -> int:
    (prefix / "site.conf").write_text(site)
    (prefix / "nginx.conf").write_text(NGINX_CONF.format(prefix=prefix))
    argv = [NGINX, "-p", str(prefix), "-c", str(prefix / "nginx.conf"), "-e"]
    argv += [str(prefix / "error.log")]
    COMMANDS.add([*argv, "-t"])
    subprocess.run([*argv, "-t"], check=True, capture_output=True, timeout=30)
    proc = procs.start([*argv, "-g", "daemon off;"])
    wait_http(port)
    body = http_get(port).split(b"\r\n\r\n", 1)[1]
    BODIES[port] = re.sub(rb"pid=\d+", b"pid=N", body)  # the hello app names its process
    return proc.pid


def _start_cpsysd(procs: Procs, port: int) -> list[int]:
    tmp = _tmpdir()
    site = cpsysd_site(_description(tmp, port), tmp / "site.conf")
    pids = []
    for instance in ("1", "2"):
        sock = _unix_listener(tmp / f"hello-{instance}.sock")
        try:
            argv = [PYTHON, str(APPS / "exec_with_fd3.py"), str(sock.fileno()), PYTHON, "-m"]
            argv += ["cpsysd", "serve", "-c", str(tmp / "cpsysd.toml")]
            env = {"LISTEN_FDS": "1", "LISTEN_FDNAMES": "http"}
            pids.append(procs.start(argv, env=env, pass_fds=[sock.fileno()]).pid)
        finally:
            sock.close()
    return [*pids, start_nginx(procs, tmp, site, port)]


def _gunicorn_site(port: int, sock: Path) -> str:
    """The cpsysd site with its upstream replaced: the same proxy settings for gunicorn."""
    tmp = _tmpdir()
    text = cpsysd_site(_description(tmp, port), tmp / "site.conf")
    text = re.sub(r"(?m)^    server unix:\S+;\n", "", text)
    return text.replace("keepalive 32;", f"server unix:{sock};\n    keepalive 32;", 1)


def _start_gunicorn(procs: Procs, port: int) -> list[int]:
    tmp = _tmpdir()
    sock = tmp / "gunicorn.sock"
    argv = [str(VENV / "bin" / "gunicorn"), "-b", f"unix:{sock}", "-w", "2", "-k", "sync"]
    argv += ["--no-control-socket", "--chdir", str(APPS), "--log-level", "warning"]
    pid = procs.start([*argv, "wsgi_hello:application"]).pid
    return [pid, start_nginx(procs, tmp, _gunicorn_site(port, sock), port)]


def _start_uwsgi(procs: Procs, port: int) -> list[int]:
    tmp = _tmpdir()
    sock = tmp / "uwsgi.sock"
    argv = [
        "uwsgi", "--plugin", "python3", "--socket", str(sock), "--chmod-socket=666",
        "--listen", "1024",
        "--master", "--processes", "2", "--virtualenv", str(VENV),
        "--chdir", str(APPS), "--module", "wsgi_hello:application",
        "--disable-logging", "--die-on-term", "--need-app", "--lazy-apps",
    ]  # fmt: skip
    pid = procs.start(argv).pid
    return [pid, start_nginx(procs, tmp, UWSGI_SITE.format(sock=sock, port=port), port)]


def _contender(name: str, start: Callable[[Procs, int], list[int]]) -> Contender:
    return Contender(name, start)


CPSYSD = _contender("nginx + 2 x cpsysd serve (unix)", _start_cpsysd)
GUNICORN = _contender("nginx + gunicorn sync -w 2 (unix)", _start_gunicorn)
UWSGI = _contender("nginx + uWSGI 2 processes (uwsgi protocol)", _start_uwsgi)
CONTENDERS = (CPSYSD, GUNICORN, UWSGI)

# The figures the chart draws: {contender name: median req/s}, filled by run().
FIGURES: dict[str, float] = {}


def run(cfg: Config) -> Section:
    section = Section("Production shape")
    try:
        results = compare(CONTENDERS, [CONNECTIONS], cfg.reps, cfg.duration)
    finally:
        for tmp in _TMP:
            shutil.rmtree(tmp, ignore_errors=True)
        _TMP.clear()
    if len(set(BODIES.values())) != 1:
        raise RuntimeError(f"the contenders answered differently: {sorted(set(BODIES.values()))}")
    BODIES.clear()
    for contender in CONTENDERS:
        loads = results[(contender.name, CONNECTIONS)]
        FIGURES[contender.name] = rps(loads).median
        errors = sum(item.wrk.errors for item in loads)
        section.row(
            f"{contender.name}, c={CONNECTIONS}",
            f"{rps(loads).median:.0f} req/s, p99 {p99(loads).median:.1f} ms",
            "",
            rps(loads).spread(),
            f"{cpu(loads).median:.0f} us CPU/req (nginx + app); {errors} errors",
        )
    ours = results[(CPSYSD.name, CONNECTIONS)]
    for other in (GUNICORN, UWSGI):
        theirs = results[(other.name, CONNECTIONS)]
        ratio: Samples = ratio_samples(rps(ours), rps(theirs))
        tail = ratio_samples(p99(ours), p99(theirs))
        section.row(
            f"req/s cpsysd / {other.name.split(' (')[0].removeprefix('nginx + ')}",
            "",
            f"{ratio.median:.2f}x",
            ratio.spread(),
            f"p99 {tail.median:.2f}x",
        )
    section.charts.append(
        Chart(
            f"Production shape: nginx in front, unix sockets, c={CONNECTIONS}",
            "req/s",
            tuple(FIGURES.items()),
        )
    )
    section.headline.append(
        f"Production shape (nginx in front, unix sockets, c={CONNECTIONS}): 2 `cpsysd serve` "
        f"{FIGURES[CPSYSD.name]:.0f} req/s vs gunicorn sync -w 2 {FIGURES[GUNICORN.name]:.0f} "
        f"and uWSGI (uwsgi protocol) {FIGURES[UWSGI.name]:.0f}."
    )
    section.details.append(
        "Each contender gets its own nginx 1.22 (`worker_processes 1`, access log off, its own "
        "prefix and config in a temp dir). cpsysd's site is the one `cpsysd nginx -c FILE "
        "--listen-host 127.0.0.1` writes for the example app with `workers = 2` and a unix "
        "socket (upstream `hello-1.sock`, `hello-2.sock`, keepalive 32); each instance is passed "
        "its bound unix socket as fd 3 (LISTEN_FDNAMES=http), as `hello@I.socket` would. "
        "gunicorn gets the same site with the upstream pointed at its socket; uWSGI gets "
        "`uwsgi_pass` with Debian's `uwsgi_params` (its protocol has no upstream keep-alive). "
        f"wrk: 1 thread, {CONNECTIONS} keep-alive connections to nginx. CPU per request sums "
        "nginx and the app server."
    )
    return section
