"""The system calls a kept-alive connection costs in a real ``cpsysd serve``, counted by the real
strace(1) attached to it (runtime/framing.py, gate.py, server.py; bench/README.md says what
each cut saved): one send per small response (the header block goes out with the body), no
settimeout() ioctls and no recv() that finds nothing, and a connection whose next request
arrives while the previous one is being served is read by its worker, never registered with
the selector in between. Counts of calls, not timings."""

from __future__ import annotations

import itertools
import re
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest
from runtimekit import get_json
from test_hostile_slow import server

pytestmark = pytest.mark.skipif(shutil.which("strace") is None, reason="needs strace(1)")


def _response(sock: socket.socket) -> bytes:
    """One response with a Content-Length body, read to its end."""
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(65536)
    head, _, body = data.partition(b"\r\n\r\n")
    length = int(re.search(rb"Content-Length: (\d+)", head).group(1))  # type: ignore[union-attr]
    while len(body) < length:
        body += sock.recv(65536)
    return head + b"\r\n\r\n" + body


def _traced(
    pid: int, log: Path, calls: str = "trace=sendto,recvfrom,epoll_ctl,ioctl,read,write"
) -> subprocess.Popen[bytes]:
    tracer = subprocess.Popen(
        ["strace", "-f", "-qq", "-s", "300", "-o", str(log), "-p", str(pid), "-e", calls],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    time.sleep(1.0)  # attached to every thread before the first request
    return tracer


def test_a_kept_alive_connection_costs_one_send_per_response_and_no_selector_trip(
    tmp_path: Path,
) -> None:
    with server(tmp_path / "app") as proc:
        get_json(proc.address)  # type: ignore[attr-defined]
        log = tmp_path / "strace.log"
        tracer = _traced(proc.pid, log)
        try:
            with socket.create_connection(("127.0.0.1", proc.port), timeout=10) as sock:  # type: ignore[attr-defined]
                time.sleep(0.3)  # accepted and waiting in the selector before any byte
                sock.sendall(b"GET /slow?seconds=0.6 HTTP/1.1\r\nHost: x\r\n\r\n")
                time.sleep(0.3)  # the next request arrives while the first is being served
                sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
                first, second = _response(sock), _response(sock)
                time.sleep(0.3)  # this one waits in the selector: nothing had arrived
                sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
                third = _response(sock)
                time.sleep(0.3)
        finally:
            tracer.send_signal(signal.SIGINT)
            tracer.wait(10)
    for response, body in ((first, b"\nend\n"), (second, b"hello\n"), (third, b"hello\n")):
        assert response.startswith(b"HTTP/1.1 200 ")
        assert response.endswith(body)
    trace = log.read_text()
    # the server's descriptor of our connection: where the responses went
    fds = set(re.findall(r"sendto\((\d+), \"HTTP/1\.1 200 ", trace))
    assert len(fds) == 1, trace
    fd = fds.pop()
    mine = re.compile(rf"\b[a-z_]+\({fd}, |epoll_ctl\(\d+, EPOLL_CTL_\w+, {fd}, ")
    ours = [line for line in trace.splitlines() if mine.search(line)]
    hellos = [line for line in ours if "sendto(" in line and "\\r\\n\\r\\nhello\\n" in line]
    assert len(hellos) == 2, ours  # status line, header block and body in one send() each
    assert all('"HTTP/1.1 200 ' in line for line in hellos), ours
    # only those of the accept (cheroot's settimeout(), 1 or 2), none per request
    assert len([line for line in ours if "FIONBIO" in line]) <= 2, ours
    # a receive that finds nothing only where nothing had come (after the accept, and after
    # the second and third responses), never right after a receive that got the request
    received = re.compile(r"^(\d+) (read|recvfrom)\(.* = [1-9]\d*$")
    for before, line in itertools.pairwise(ours):
        previous = received.match(before)
        if "EAGAIN" in line and previous:
            assert not line.startswith(previous.group(1) + " "), ours
    registered = [line for line in ours if "EPOLL_CTL_ADD" in line]
    # after the accept (nothing sent yet), after the second and the third response (nothing
    # sent yet); not after the first: the second request had arrived already
    assert len(registered) == 3, ours


def test_a_connection_is_kept_alive_beside_more_than_ten_idle_ones(tmp_path: Path) -> None:
    """server.py: cheroot closed every connection after its response ("Connection: close")
    while more than 10 others waited in its selector; the bound is half the descriptor limit
    now, so 12 idle kept-alive connections do not turn the next one into a new TCP
    connection per request."""
    request = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"
    with server(tmp_path / "app") as proc:
        idle = []
        try:
            for _ in range(12):
                sock = socket.create_connection(("127.0.0.1", proc.port), timeout=10)  # type: ignore[attr-defined]
                idle.append(sock)
                sock.sendall(request)
                _response(sock)  # served, then waiting in the selector for its next request
            time.sleep(0.3)
            with socket.create_connection(("127.0.0.1", proc.port), timeout=10) as sock:  # type: ignore[attr-defined]
                for _ in range(2):
                    sock.sendall(request)
                    response = _response(sock)
                    assert response.endswith(b"hello\n")
                    assert b"Connection: close" not in response, response
        finally:
            for sock in idle:
                sock.close()
