"""Helpers for the scale-out tests (nginx, app instances, supervisord): real processes in temp
directories on free ports, always stopped by PID."""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

NGINX = "/usr/sbin/nginx"
REPO = Path(__file__).resolve().parent.parent


def free_port() -> int:
    """A TCP port nobody listens on right now on 127.0.0.1 (as conftest.free_port; imported
    from here because `conftest` is ambiguous once tests/e2e/conftest.py is collected too)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def nginx_wrapper(prefix: Path, site: Path) -> str:
    """A minimal nginx.conf whose every writable path is inside ``prefix``; the site is
    included from its http{} context, the way /etc/nginx/nginx.conf includes sites-enabled."""
    temps = "".join(
        f"    {kind}_temp_path {prefix}/{kind};\n"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    return (
        # Workers as root: the test's temp directories (static files, unix sockets) are 0700.
        "user root;\n"
        "worker_processes 1;\n"
        f"pid {prefix}/nginx.pid;\n"
        f"error_log {prefix}/error.log;\n"
        "events { worker_connections 256; }\n"
        "http {\n"
        f"    access_log {prefix}/access.log;\n"
        f"{temps}"
        f"    include {site};\n"
        "}\n"
    )


def nginx_prepare(prefix: Path, site_text: str) -> Path:
    """Write the site and its wrapper into ``prefix``; returns the wrapper's path."""
    prefix.mkdir(parents=True, exist_ok=True)
    site = prefix / "site.conf"
    site.write_text(site_text)
    conf = prefix / "nginx.conf"
    conf.write_text(nginx_wrapper(prefix, site))
    return conf


def nginx_test(prefix: Path, site_text: str) -> subprocess.CompletedProcess[str]:
    """``nginx -t`` of ``site_text`` in a private prefix."""
    conf = nginx_prepare(prefix, site_text)
    argv = [NGINX, "-t", "-p", str(prefix), "-c", str(conf), "-e", str(prefix / "error.log")]
    return subprocess.run(argv, capture_output=True, text=True, check=False, timeout=30)


def nginx_problems(result: subprocess.CompletedProcess[str]) -> list[str]:
    """Lines of ``nginx -t`` output other than its two success lines (warnings count)."""
    ok = ("syntax is ok", "test is successful")
    return [line for line in result.stderr.splitlines() if line and not line.endswith(ok)]


def wait_for_port(host: str, port: int, timeout: float = 15.0, proc: Any = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before {host}:{port} opened")
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listens on {host}:{port} after {timeout} s")


def stop_process(
    proc: subprocess.Popen[Any], sig: int = signal.SIGTERM, grace: float = 10.0
) -> None:
    """Stop a process this test started, by its PID: ``sig``, then SIGKILL after ``grace`` s."""
    if proc.poll() is None:
        os.kill(proc.pid, sig)
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


@contextmanager
def running(
    argv: Sequence[str], log: Path, *, env: Mapping[str, str] | None = None, cwd: Path | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    """Run ``argv`` with output to ``log``; stopped by PID on exit, even when the test fails."""
    with log.open("ab") as out:
        proc = subprocess.Popen(
            list(argv), stdout=out, stderr=subprocess.STDOUT, env=dict(env) if env else None,
            cwd=cwd,
        )  # fmt: skip
    try:
        yield proc
    finally:
        stop_process(proc)


@contextmanager
def nginx_running(prefix: Path, site_text: str) -> Iterator[subprocess.Popen[bytes]]:
    """Real nginx in the foreground (``daemon off``) on ``site_text``, stopped by PID (SIGQUIT
    is nginx's graceful stop; its workers exit with the master)."""
    conf = nginx_prepare(prefix, site_text)
    argv = [NGINX, "-p", str(prefix), "-c", str(conf), "-e", str(prefix / "error.log"),
            "-g", "daemon off;"]  # fmt: skip
    with running(argv, prefix / "nginx.out") as proc:
        yield proc


def http_get(
    host: str,
    port: int,
    path: str,
    *,
    source: str | None = None,
    headers: Mapping[str, str] | None = None,
    timeout: float = 10.0,
) -> tuple[int, dict[str, str], bytes]:
    """One HTTP/1.1 GET from ``source`` (a local address to bind, e.g. 127.0.0.2)."""
    conn = http.client.HTTPConnection(
        host, port, timeout=timeout, source_address=(source, 0) if source else None
    )
    try:
        conn.request("GET", path, headers=dict(headers or {}))
        response = conn.getresponse()
        body = response.read()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, body
    finally:
        conn.close()


def whoami(host: str, port: int, **kwargs: Any) -> dict[str, Any]:
    status, _, body = http_get(host, port, "/whoami", **kwargs)
    assert status == 200, body
    result: dict[str, Any] = json.loads(body)
    return result


def free_port_run(count: int) -> int:
    """The first of ``count`` consecutive TCP ports that are free on 127.0.0.1 right now."""
    for _ in range(200):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            first = int(probe.getsockname()[1])
        if first + count > 65536:
            continue
        socks = []
        try:
            for port in range(first, first + count):
                sock = socket.socket()
                socks.append(sock)
                sock.bind(("127.0.0.1", port))
            return first
        except OSError:
            continue
        finally:
            for sock in socks:
                sock.close()
    raise RuntimeError(f"found no {count} consecutive free ports")


def serve_env() -> dict[str, str]:
    """The environment for `cpsysd serve` children: this one, without bytecode writes."""
    return {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}


@contextmanager
def activated_instances(
    description: Path, addresses: Sequence[str], log_dir: Path, fd_name: str = "http"
) -> Iterator[list[subprocess.Popen[bytes]]]:
    """One `cpsysd serve -c DESCRIPTION` per address, each under the real
    systemd-socket-activate (LISTEN_FDS=1, LISTEN_FDNAMES=fd_name), like the instances of
    NAME@.socket; all stopped by PID at the end."""

    with ExitStack() as stack:
        procs = []
        for index, address in enumerate(addresses):
            # systemd-socket-activate passes on LISTEN_*, -E and a few basics, not our environment.
            argv = ["systemd-socket-activate", "-l", address, f"--fdname={fd_name}",
                    "-E", "PYTHONDONTWRITEBYTECODE=1",
                    sys.executable, "-m", "cpsysd", "serve", "-c", str(description)]  # fmt: skip
            log = log_dir / f"instance-{index + 1}.log"
            procs.append(stack.enter_context(running(argv, log, env=serve_env())))
        for proc, address in zip(procs, addresses, strict=True):
            wait_for_listener(address, proc)
        yield procs


def wait_for_listener(address: str, proc: subprocess.Popen[bytes], timeout: float = 15.0) -> None:
    """Until systemd-socket-activate listens on ``address``: a client (nginx) that connects
    earlier is refused and marks that instance as failed for its fail_timeout."""
    if not address.startswith("/"):
        host, _, port = address.rpartition(":")
        wait_for_port(host.strip("[]") or "127.0.0.1", int(port), timeout, proc)
        return
    deadline = time.monotonic() + timeout
    while not Path(address).exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"nothing listens on {address}")
        time.sleep(0.02)
