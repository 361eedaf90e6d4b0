"""How many slow clients a server tolerates: ``cpsysd serve`` (under systemd-socket-activate),
plain ``cherrypy.quickstart`` and gunicorn sync (2 workers), all serving the example app.

For each server, kind of slow client and crowd size (10, 50, 200): open that many connections
that are ``silent`` (connect, send nothing), ``trickle`` (a request line, then one header byte
per connection every 0.5 s) or ``slowread`` (``GET /`` with a 4 KiB receive buffer, read at
about 4 KiB/s); after 1 s a normal client sends sequential ``GET /`` requests, each on a new
connection with a 2 s timeout, for ``--seconds`` (at most 300 requests). A crowd is tolerated
when that client's p99 stays within 100 ms and none of its requests failed. Every run is
bounded in time; every socket is closed and every server stopped by its process group.

    .venv/bin/python bench/slowclients.py [--seconds 4] [--sizes 10 50 200]
"""

from __future__ import annotations

import argparse
import http.client
import socket
import sys
import threading
import time
from collections.abc import Callable

from benchlib import Procs, free_port, say
from servers import CPSYSD_SERVE, gunicorn_argv, start_activated, start_plain_cherrypy
from servers import start_wsgi_server as start_wsgi

KINDS = ("silent", "trickle", "slowread")
LIMIT_MS = 100.0
TIMEOUT = 2.0


class Crowd:
    """``count`` slow connections of one kind, driven by one thread until :meth:`close`."""

    def __init__(self, port: int, kind: str, count: int) -> None:
        self.kind = kind
        self.socks: list[socket.socket] = []
        self.done = threading.Event()
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            self.socks.append(sock)
            if kind == "slowread":
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.settimeout(TIMEOUT)
            try:
                sock.connect(("127.0.0.1", port))
                if kind == "trickle":
                    sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")
                elif kind == "slowread":
                    sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n" * 50)
            except OSError:
                sock.close()  # refused or timed out: the server did not take it
            sock.setblocking(False)
        self.thread = threading.Thread(target=self._drive, daemon=True)
        self.thread.start()

    def _drive(self) -> None:
        while not self.done.wait(0.5):
            for sock in self.socks:
                if sock.fileno() < 0:
                    continue
                try:
                    if self.kind == "trickle":
                        sock.send(b"X")
                    elif self.kind == "slowread":
                        sock.recv(2048)
                except (BlockingIOError, InterruptedError):
                    pass
                except OSError:
                    sock.close()

    def close(self) -> None:
        self.done.set()
        self.thread.join(5)
        for sock in self.socks:
            sock.close()


def normal_client(port: int, seconds: float) -> tuple[float, int, int]:
    """p99 in ms (a failed request counts as at least TIMEOUT), requests, failures."""
    durations: list[float] = []
    failures = 0
    end = time.monotonic() + seconds
    while time.monotonic() < end and len(durations) < 300:
        start = time.monotonic()
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=TIMEOUT)
        answered = False
        try:
            conn.request("GET", "/")
            response = conn.getresponse()
            response.read()
            answered = response.status == 200
        except (OSError, http.client.HTTPException):
            pass
        finally:
            conn.close()
        elapsed = time.monotonic() - start
        if not answered:
            failures += 1
            elapsed = max(elapsed, TIMEOUT)
        durations.append(elapsed)
    ordered = sorted(durations)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000
    return p99, len(durations), failures


def measure(port: int, kind: str, count: int, seconds: float) -> tuple[float, int, int]:
    crowd = Crowd(port, kind, count)
    try:
        time.sleep(1.0)
        return normal_client(port, seconds)
    finally:
        crowd.close()
        time.sleep(1.0)  # let the server notice the closed connections


def contenders(procs: Procs) -> dict[str, Callable[[int], object]]:
    return {
        "cpsysd serve": lambda port: start_activated(procs, port, CPSYSD_SERVE),
        "cherrypy.quickstart": lambda port: start_plain_cherrypy(procs, port),
        "gunicorn sync -w 2": lambda port: start_wsgi(procs, gunicorn_argv(port, "sync"), port),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10, 50, 200])
    args = parser.parse_args()
    rows = []
    with Procs() as procs:
        for name, start in contenders(procs).items():
            port = free_port()
            start(port)
            for kind in KINDS:
                tolerated = 0
                passing = True
                cells = []
                for count in args.sizes:
                    p99, requests, failed = measure(port, kind, count, args.seconds)
                    say(f"{name} {kind} {count}: p99 {p99:.1f} ms, {requests} req, {failed} failed")
                    cells.append(f"{p99:.0f}" + (f" ({failed} failed)" if failed else ""))
                    passing = passing and p99 <= LIMIT_MS and not failed
                    tolerated = count if passing else tolerated
                rows.append((name, kind, cells, tolerated))
            procs.close()
    header = " | ".join(f"p99 ms at {n}" for n in args.sizes)
    print(f"\n| server | slow clients | {header} | tolerated (p99 <= 100 ms) |")
    print("|---|---|" + "---|" * len(args.sizes) + "---|")
    for name, kind, cells, tolerated in rows:
        shown = f"{tolerated}" if tolerated else f"< {args.sizes[0]}"
        print(f"| {name} | {kind} | {' | '.join(cells)} | {shown} |")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
