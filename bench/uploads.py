"""Peak memory of large uploads: ``cpsysd serve`` (under systemd-socket-activate, its default
10 MiB body limit), plain ``cherrypy.quickstart`` (CherryPy's 100 MiB default, and again with
the same 10 MiB limit) and gunicorn sync (2 workers) serving the example app as WSGI.

For each server, started fresh: 4 parallel ``application/x-www-form-urlencoded`` POSTs of the
largest body it accepts (``a=xxx...``, streamed in 1 MiB chunks), then, on a fresh start again,
one POST of 100 MB (which cpsysd refuses with 413 before reading it). The server's memory is
the sum over its processes: RSS sampled every 20 ms (the peak of the sum), and the sum of each
process's VmHWM (its own peak, /proc/PID/status: an upper bound, since the processes need not
peak together). Loopback only; every socket has a 120 s timeout and every run a deadline;
every server is stopped by its process group.

    .venv/bin/python bench/uploads.py
"""

from __future__ import annotations

import argparse
import contextlib
import socket
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from benchlib import Procs, free_port, pids_of_tree, say
from servers import CPSYSD_SERVE, gunicorn_argv, start_activated, start_plain_cherrypy
from servers import start_wsgi_server as start_wsgi

MIB = 1024 * 1024
TIMEOUT = 120.0
PARALLEL = 4
HUGE = 100_000_000  # the 100 MB upload of issue 15


def upload(port: int, size: int, statuses: list[str]) -> None:
    """POST a urlencoded body of ``size`` bytes; append the response's status (or the error).
    A server that answers early (413) and closes is read after the send fails."""
    head = (
        f"POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
        f"Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {size}\r\n\r\n"
    ).encode()
    chunk = b"x" * MIB
    with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as sock:
        try:
            sock.sendall(head + b"a=")
            left = size - 2
            while left > 0:
                sent = chunk if left >= MIB else chunk[:left]
                sock.sendall(sent)
                left -= len(sent)
        except OSError:
            pass  # refused early: read what the server said
        try:
            reply = sock.recv(64)
        except OSError as error:
            statuses.append(type(error).__name__)
            return
        line = reply.split(b"\r\n", 1)[0].decode(errors="replace")
        statuses.append(line.split(" ")[1] if line.startswith("HTTP/") else f"({line!r})")


def rss_kib(pid: int, key: str) -> int:
    with contextlib.suppress(OSError), open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return 0


def tree_kib(root: int, key: str) -> int:
    return sum(rss_kib(pid, key) for pid in pids_of_tree(root))


@dataclass(frozen=True)
class Result:
    """KiB figures of one run, the responses' statuses and how long the uploads took."""

    idle: int
    peak: int
    hwm: int
    after: int
    statuses: list[str]
    seconds: float


def run(root: int, port: int, size: int, count: int) -> Result:
    """``count`` parallel uploads of ``size`` bytes to the server whose process tree is ``root``."""
    idle = tree_kib(root, "VmRSS")
    statuses: list[str] = []
    threads = [
        threading.Thread(target=upload, args=(port, size, statuses), daemon=True)
        for _ in range(count)
    ]
    peak = idle
    start = time.monotonic()
    for thread in threads:
        thread.start()
    while any(t.is_alive() for t in threads) and time.monotonic() - start < TIMEOUT + 10:
        peak = max(peak, tree_kib(root, "VmRSS"))
        time.sleep(0.02)
    seconds = time.monotonic() - start
    time.sleep(1.0)  # let the server finish with the last request
    return Result(
        idle=idle,
        peak=max(peak, tree_kib(root, "VmRSS")),
        hwm=tree_kib(root, "VmHWM"),
        after=tree_kib(root, "VmRSS"),
        statuses=sorted(statuses) + ["timeout"] * (count - len(statuses)),
        seconds=seconds,
    )


def contenders(procs: Procs) -> list[tuple[str, int, Callable[[int], int]]]:
    """(name, largest accepted body, start on a port -> root PID of the server)."""
    return [
        ("cpsysd serve", 10 * MIB,
         lambda port: start_activated(procs, port, CPSYSD_SERVE).pid),
        ("cherrypy.quickstart", 100 * MIB,
         lambda port: start_plain_cherrypy(procs, port).pid),
        ("cherrypy.quickstart, 10 MiB limit", 10 * MIB,
         lambda port: start_plain_cherrypy(procs, port, 10 * MIB).pid),
        ("gunicorn sync -w 2", 100 * MIB,
         lambda port: start_wsgi(procs, gunicorn_argv(port, "sync"), port).pid),
    ]  # fmt: skip


def mib(kib: int) -> str:
    return f"{kib / 1024:.0f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.parse_args()
    rows = []
    with Procs() as procs:
        for name, limit, start in contenders(procs):
            cells = []
            for size, count in ((limit, PARALLEL), (HUGE, 1)):
                port = free_port()
                root = start(port)
                result = run(root, port, size, count)
                say(f"{name}: {count} x {size} B: {result}")
                cells.append(result)
                procs.close()
            rows.append((name, limit, cells))
    print(
        "\n| server | body limit | idle RSS MiB | 4 parallel uploads of the limit: status | "
        "peak RSS MiB (sampled sum) | sum of VmHWM MiB | RSS after MiB | "
        "one 100 MB upload: status | peak RSS MiB |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for name, limit, (four, one) in rows:
        print(
            f"| {name} | {limit // MIB} MiB | {mib(four.idle)} | "
            f"{' '.join(four.statuses)} ({four.seconds:.1f} s) | "
            f"{mib(four.peak)} | {mib(four.hwm)} | {mib(four.after)} | "
            f"{' '.join(one.statuses)} | {mib(one.peak)} |"
        )
    sys.stdout.flush()


if __name__ == "__main__":
    main()
