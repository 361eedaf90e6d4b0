"""Hostile HTTP clients against a real ``cpsysd serve`` on real sockets (runtime/framing.py,
runtime/accepting.py): a body the app did not read is never parsed as a request, ambiguous
framing is refused and the connection closed, header fields and bodies are capped, and running
out of descriptors neither spins nor floods the log. Every process is stopped by its PID."""

from __future__ import annotations

import contextlib
import os
import re
import resource
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from runtimekit import APP_SOURCE, CPSYSD, PYTHON, Proc, free_port, get, get_json, write_app

# The test app plus a handler that reads the whole body, whatever its type.
APP = (
    APP_SOURCE
    + """
    @cherrypy.expose
    @cherrypy.config(**{"request.process_request_body": False})
    def echo(self):
        return "%d bytes\\n" % len(cherrypy.request.rfile.read())
"""
)
MIB = 1024 * 1024
HIDDEN = b"GET /whoami HTTP/1.1\r\nHost: x\r\n\r\n"  # answered with JSON naming "env_listen"


def serve(directory: Path, conf: str = "", nofile: int | None = None) -> Proc:
    """``cpsysd serve`` binding 127.0.0.1:PORT itself; ``conf``: lines for app.conf's [global];
    ``nofile`` lowers RLIMIT_NOFILE (soft and hard) in the child before it execs."""
    port = free_port()
    description = write_app(directory, [f"127.0.0.1:{port}"], app_source=APP)
    config = directory / "app.conf"
    config.write_text(config.read_text().replace("[global]\n", f"[global]\n{conf}"))
    argv = [*CPSYSD, "serve", "-c", str(description)]
    if nofile is not None:
        setlimit = (
            "import os, resource, sys; "
            f"resource.setrlimit(resource.RLIMIT_NOFILE, ({nofile}, {nofile})); "
            "os.execv(sys.executable, [sys.executable, *sys.argv[1:]])"
        )
        argv = [PYTHON, "-c", setlimit, *argv[1:]]
    proc = Proc(argv, directory / "serve.log", cwd=directory)
    proc.address = f"127.0.0.1:{port}"  # type: ignore[attr-defined]
    get_json(proc.address)  # type: ignore[attr-defined]  # up and answering
    return proc


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    proc = serve(tmp_path_factory.mktemp("http") / "app")
    try:
        yield proc.address  # type: ignore[attr-defined]
    finally:
        assert proc.stop() == 0, proc.output()
    # the one traceback expected: /echo reading the bad trailer section (a 500, as cheroot's own
    # ValueError for a bad chunk size is)
    output = proc.output()
    assert output.count("Traceback") == output.count("ValueError: Bad trailer section"), output


def exchange(address: str, data: bytes, wait: float = 2.0) -> tuple[list[bytes], bool]:
    """Send ``data`` on one connection; the status lines of every response that came back, and
    whether the server closed the connection (False: it was still open after ``wait`` s)."""
    host, port = address.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=wait) as sock:
        sock.sendall(data)
        received = b""
        closed = False
        try:
            while chunk := sock.recv(65536):
                received += chunk
            closed = True
        except TimeoutError:
            pass
        except ConnectionResetError:
            closed = True
    assert b"env_listen" not in received, "the request hidden in a body was answered"
    return re.findall(rb"HTTP/1\.1 ([0-9]{3}) ", received), closed


def post_chunked(body: bytes, path: str = "/", extra: bytes = b"") -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n".encode()
        + b"Content-Type: application/octet-stream\r\n"
        + extra
        + b"\r\n"
        + body
    )


def test_unread_chunked_body_is_never_parsed_as_a_request(server: str) -> None:
    # A chunk-size line that is also a request line (a lenient proxy reads size 0x1B and
    # passes it on); the chunk holds the rest of the hidden request. cheroot answered it.
    data = b"Host: x\r\nX-Pad: 1234567\r\n\r\n"
    body = b"%X /whoami HTTP/1.1\r\n" % len(data) + data + b"\r\n0\r\n\r\n"
    assert exchange(server, post_chunked(body)) == ([b"200"], True)


def test_unread_chunked_body_is_drained_and_the_connection_serves_on(server: str) -> None:
    body = b"%x\r\n" % len(HIDDEN) + HIDDEN + b"\r\n0\r\nX-Trailer: 1\r\n\r\n"
    follow_up = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"
    assert exchange(server, post_chunked(body) + follow_up) == ([b"200", b"200"], False)


def test_trailer_section_cannot_hide_a_request(server: str) -> None:
    # the app reads the body to its end; cheroot left the trailer section in the stream
    body = b"3\r\nabc\r\n0\r\n" + HIDDEN
    # the app's read fails (500, as with cheroot's own bad chunk sizes), the connection closes
    assert exchange(server, post_chunked(body, "/echo")) == ([b"500"], True)


def test_oversized_unread_body_closes_the_connection(server: str) -> None:
    body = b"%x\r\n" % MIB + b"a" * MIB + b"\r\n0\r\n\r\n"  # over DRAIN_LIMIT: not drained
    assert exchange(server, post_chunked(body) + HIDDEN) == ([b"200"], True)


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        (b"Transfer-Encoding: chunked\r\nContent-Length: 5\r\n", b"400"),
        (b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n", b"400"),
        (b"Transfer-Encoding: gzip\r\n", b"400"),
        (b"Transfer-Encoding: chunked, gzip\r\n", b"400"),
        (b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n", b"400"),
        (b"Transfer-Encoding: gzip, chunked\r\n", b"501"),
        (b"Transfer-Encoding:\r\n", b"400"),
        (b"Transfer-Encoding : chunked\r\n", b"400"),
        (b"Content-Length: +5\r\n", b"400"),
        (b"Content-Length: 0x5\r\n", b"400"),
        (b"Content-Length: 5\r\nContent-Length: 0\r\n", b"400"),
        (b"X-A: 1\r\n Transfer-Encoding: chunked\r\n", b"400"),
    ],
)
def test_ambiguous_framing_is_refused_and_the_connection_closed(
    server: str, headers: bytes, status: bytes
) -> None:
    request = b"POST / HTTP/1.1\r\nHost: x\r\n" + headers + b"\r\n0\r\n\r\n" + HIDDEN
    assert exchange(server, request) == ([status], True)


def test_transfer_encoding_in_http_1_0_is_refused(server: str) -> None:
    request = b"POST / HTTP/1.0\r\nConnection: keep-alive\r\nTransfer-Encoding: chunked\r\n\r\n"
    assert exchange(server, request + b"0\r\n\r\n" + HIDDEN) == ([b"400"], True)


def test_header_count_is_capped(server: str) -> None:
    def request(count: int) -> bytes:
        fields = b"".join(b"X-%d: a\r\n" % n for n in range(count - 1))
        return b"GET / HTTP/1.1\r\nHost: x\r\n" + fields + b"\r\n"

    assert exchange(server, request(100)) == ([b"200"], False)
    assert exchange(server, request(101)) == ([b"431"], True)
    started = time.monotonic()
    assert exchange(server, request(40_000)) == ([b"431"], True)
    assert time.monotonic() - started < 2


def rss_kib(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(next(line for line in status.splitlines() if line.startswith("VmRSS:")).split()[1])


def upload(address: str, size: int, path: str = "/") -> bytes:
    """POST ``size`` bytes (urlencoded, Content-Length) the way a plain client does: headers and
    body at once, the body from another thread; returns the status."""
    host, port = address.rsplit(":", 1)
    head = (
        f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {size}\r\n"
        "Content-Type: application/x-www-form-urlencoded\r\n\r\n"
    ).encode()
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(head)

        def send_body() -> None:
            # a 413 closes the connection: the server does not read the rest
            with contextlib.suppress(OSError):
                sock.sendall(b"a=" + b"x" * (size - 2))

        sender = threading.Thread(target=send_body)
        sender.start()
        response = sock.recv(65536)
        sock.shutdown(socket.SHUT_RDWR)
        sender.join(30)
    return response.split(b"\r\n")[0][9:12]


def test_body_limit_is_10_mib_and_answered_before_reading(tmp_path: Path) -> None:
    proc = serve(tmp_path / "app")
    try:
        address = proc.address  # type: ignore[attr-defined]
        assert upload(address, 9 * MIB, "/echo") == b"200"
        before = rss_kib(proc.pid)
        assert upload(address, 11 * MIB) == b"413"
        grown = rss_kib(proc.pid) - before
        print(f"RSS after the 11 MiB upload: +{grown} KiB")
        assert grown < 2048, f"RSS grew by {grown} KiB"
        assert get(address, "/") == (200, b"hello\n")
    finally:
        assert proc.stop() == 0, proc.output()


def test_app_config_sets_its_own_body_limit(tmp_path: Path) -> None:
    proc = serve(tmp_path / "app", conf=f"server.max_request_body_size = {20 * MIB}\n")
    try:
        assert upload(proc.address, 11 * MIB, "/echo") == b"200"  # type: ignore[attr-defined]
        assert upload(proc.address, 21 * MIB) == b"413"  # type: ignore[attr-defined]
    finally:
        assert proc.stop() == 0, proc.output()


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def test_out_of_descriptors_backs_off_and_recovers(tmp_path: Path) -> None:
    limit = 128
    assert resource.getrlimit(resource.RLIMIT_NOFILE)[0] > 4 * limit
    proc = serve(tmp_path / "app", nofile=limit)
    idle: list[socket.socket] = []
    try:
        host, port = proc.address.rsplit(":", 1)  # type: ignore[attr-defined]
        print(f"{len(os.listdir(f'/proc/{proc.pid}/fd'))} descriptors open before")
        for _ in range(2 * limit):  # complete in the kernel's queue (BACKLOG) even unaccepted
            idle.append(socket.create_connection((host, int(port)), timeout=5))
        time.sleep(1)  # the server accepts until accept() fails with EMFILE
        assert len(os.listdir(f"/proc/{proc.pid}/fd")) == limit  # all in use
        lines, cpu = len(proc.output().splitlines()), cpu_seconds(proc.pid)
        time.sleep(3)
        cpu = cpu_seconds(proc.pid) - cpu
        logged = proc.output().splitlines()[lines:]
        print(f"3 s out of descriptors: {cpu:.2f} s CPU, {len(logged)} log lines")
        assert cpu < 0.3, f"{cpu:.2f} s of CPU in 3 s"
        assert len(logged) <= 2, logged
        assert "Too many open files" in proc.output()
        for sock in idle:
            sock.close()
        idle.clear()
        started = time.monotonic()
        assert get(proc.address, "/", timeout=10) == (200, b"hello\n")  # type: ignore[attr-defined]
        print(f"served again {time.monotonic() - started:.2f} s after the idle clients left")
    finally:
        for sock in idle:
            sock.close()
        assert proc.stop() == 0, proc.output()
    assert "Traceback" not in proc.output()
    print(proc.output()[proc.output().find("accept() failed") - 30 :])
