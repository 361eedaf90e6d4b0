"""Slow clients against a real ``cpsysd serve`` on real loopback sockets (runtime/gate.py and
the watchdog's progress probe): silent, trickling and slow-reading connections do not hold the
request threads, a header block trickled past its deadline is cut, a full queue is answered 503,
and the watchdog pings while a saturated pool makes progress but not while the app hangs.

Each crowd of slow clients is driven by one thread, for a bounded time, and closed at the end;
every server is stopped by its PID, also when a test fails."""

from __future__ import annotations

import contextlib
import http.client
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from runtimekit import (
    APP_SOURCE,
    CPSYSD,
    NotifyReceiver,
    Proc,
    free_port,
    get,
    get_json,
    wait_listening,
    write_app,
)
from test_tls_serve import client_context, pki, tls_table  # noqa: F401 - pki is a fixture

CROWD = 200
BOUND = 2.0  # generous: before the change a normal request waited the full socket_timeout (10 s)
APP = (
    APP_SOURCE
    + """
    @cherrypy.expose
    def big(self, mib="1"):
        return "y" * (int(mib) * 1024 * 1024)
"""
)


def serve(
    directory: Path, conf: str = "", env: dict[str, str] | None = None, extra: str = ""
) -> Proc:
    """``cpsysd serve`` on 127.0.0.1:PORT with CherryPy's defaults (10 request threads) plus
    ``conf``, lines for app.conf's [global]; ``extra``: lines for the description."""
    port = free_port()
    listen = f"127.0.0.1:{port}" + ("=https" if extra else "")  # a TLS listener's name
    description = write_app(directory, [listen], app_source=APP, extra=extra)
    config = directory / "app.conf"
    config.write_text(config.read_text().replace("server.thread_pool = 2\n", conf))
    proc = Proc([*CPSYSD, "serve", "-c", str(description)], directory / "serve.log", env, directory)
    proc.address = f"127.0.0.1:{port}"  # type: ignore[attr-defined]
    proc.port = port  # type: ignore[attr-defined]
    try:
        if extra:
            wait_listening(proc.address)  # type: ignore[attr-defined]
        else:
            get_json(proc.address)  # type: ignore[attr-defined]
    except BaseException:
        proc.stop()  # a server that never answered is not left running
        raise
    return proc


@contextlib.contextmanager
def server(
    directory: Path, conf: str = "", env: dict[str, str] | None = None, extra: str = ""
) -> Iterator[Proc]:
    proc = serve(directory, conf, env, extra)
    try:
        yield proc
    finally:
        proc.stop()


@contextlib.contextmanager
def crowd(
    port: int, kind: str, count: int = CROWD, seconds: float = 60, mib: int = 1
) -> Iterator[list[int]]:
    """``count`` connections that stay open: ``silent`` (send nothing), ``trickle`` (a request
    line, then one header byte per connection every 0.5 s), ``slowread`` (a request for ``mib``
    MiB, a 4 KiB receive buffer, read at about 4 KiB/s). Yields a list counting the connections the
    server closed. One driver thread, stopped after ``seconds`` or when the block ends."""
    socks: list[socket.socket] = []
    closed = [0]
    done = threading.Event()
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            socks.append(sock)
            if kind == "slowread":
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.connect(("127.0.0.1", port))
            if kind == "trickle":
                sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")
            elif kind == "slowread":
                sock.sendall(b"GET /big?mib=%d HTTP/1.1\r\nHost: x\r\n\r\n" % mib)
            sock.setblocking(False)

        def drive() -> None:
            end = time.monotonic() + seconds
            while not done.wait(0.5) and time.monotonic() < end:
                for sock in socks:
                    if sock.fileno() < 0:
                        continue
                    try:
                        if kind == "trickle":
                            sock.send(b"X")
                        elif kind == "slowread":
                            sock.recv(2048)  # twice a second
                    except (BlockingIOError, InterruptedError):
                        pass
                    except OSError:
                        closed[0] += 1
                        sock.close()

        driver = threading.Thread(target=drive, daemon=True)
        driver.start()
        time.sleep(0.5)  # all of them accepted and, before the change, holding the threads
        yield closed
    finally:
        done.set()
        for sock in socks:
            sock.close()


def timed_gets(address: str, count: int = 30, path: str = "/") -> list[float]:
    """Sequential GETs of a normal client, each on a new connection; their durations."""
    host, port = address.rsplit(":", 1)
    durations = []
    for _ in range(count):
        start = time.monotonic()
        conn = http.client.HTTPConnection(host, int(port), timeout=BOUND)
        try:
            conn.request("GET", path)
            response = conn.getresponse()
            assert (response.status, response.read()) == (200, b"hello\n")
        except TimeoutError:
            pytest.fail(f"a normal request got no answer within {BOUND} s")
        finally:
            conn.close()
        durations.append(time.monotonic() - start)
    return durations


def p99(durations: list[float]) -> str:
    ordered = sorted(durations)
    return f"p99 {ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000:.1f} ms"


@pytest.mark.parametrize("kind", ["silent", "trickle", "slowread"])
def test_a_normal_client_is_served_while_200_slow_clients_stay(tmp_path: Path, kind: str) -> None:
    with server(tmp_path / "app") as proc, crowd(proc.port, kind) as closed:  # type: ignore[attr-defined]
        durations = timed_gets(proc.address)  # type: ignore[attr-defined]
        assert max(durations) < BOUND
        print(f"\n{kind}: {CROWD} slow connections, normal client {p99(durations)}")
        assert closed[0] == 0, "slow clients inside the deadline were cut"


def test_silent_clients_do_not_stall_tls_handshakes(tmp_path: Path, pki: Path) -> None:  # noqa: F811
    # cheroot ran each TLS handshake in the accepting thread, up to socket_timeout (10 s) for
    # a client that sends nothing: 20 silent clients stopped every new HTTPS connection
    with server(tmp_path / "app", extra=tls_table(pki)) as proc, crowd(proc.port, "silent"):  # type: ignore[attr-defined]
        durations = []
        for _ in range(20):
            start = time.monotonic()
            conn = http.client.HTTPSConnection(
                "localhost", proc.port, context=client_context(pki), timeout=BOUND
            )
            try:
                conn.request("GET", "/")
                response = conn.getresponse()
                assert (response.status, response.read()) == (200, b"hello\n")
            except TimeoutError:
                pytest.fail(f"an HTTPS request got no answer within {BOUND} s")
            finally:
                conn.close()
            durations.append(time.monotonic() - start)
        print(f"\nTLS: {CROWD} silent connections, normal client {p99(durations)}")


def test_a_trickled_header_block_is_cut_at_the_deadline(tmp_path: Path) -> None:
    with server(tmp_path / "app") as proc:
        sock = socket.create_connection(("127.0.0.1", proc.port), timeout=1)  # type: ignore[attr-defined]
        with sock:
            sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: ")
            start = time.monotonic()
            received = b""
            # one byte every 0.5 s: each read is quick, only the whole block is too slow
            while time.monotonic() - start < 16:
                try:
                    sock.sendall(b"a")
                    received += sock.recv(4096)
                except TimeoutError:
                    continue
                except (BrokenPipeError, ConnectionResetError):
                    break
                if received:
                    break
            elapsed = time.monotonic() - start
    assert received.startswith(b"HTTP/1.1 408 "), (received, elapsed)
    assert 8 < elapsed < 14, elapsed


def test_a_full_queue_is_answered_503_at_once(tmp_path: Path) -> None:
    # 2 request threads hang; 100 requests queue behind them, the rest get 503
    conf = "server.thread_pool = 2\nserver.accepted_queue_size = 100\n"
    with server(tmp_path / "app", conf) as proc:
        hung = [
            socket.create_connection(("127.0.0.1", proc.port))  # type: ignore[attr-defined]
            for _ in range(2)
        ]
        waiting: list[socket.socket] = []
        try:
            for sock in hung:
                sock.sendall(b"GET /hang?seconds=20 HTTP/1.1\r\nHost: x\r\n\r\n")
            time.sleep(0.5)
            for _ in range(110):
                sock = socket.create_connection(("127.0.0.1", proc.port))  # type: ignore[attr-defined]
                waiting.append(sock)
                sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            refused = []
            deadline = time.monotonic() + BOUND
            for sock in waiting[100:]:
                sock.settimeout(max(0.01, deadline - time.monotonic()))
                with contextlib.suppress(TimeoutError):
                    refused.append(sock.recv(4096))
        finally:
            for sock in hung + waiting:
                sock.close()
    assert len(refused) >= 8, refused
    for response in refused:
        assert response.startswith(b"HTTP/1.1 503 "), response
        assert b"\r\nRetry-After: 1\r\n" in response, response


def test_by_default_150_queued_requests_wait_for_a_thread_instead_of_503(tmp_path: Path) -> None:
    # the default bound is 500 (server.py: at 100, overload answered a third of it 503)
    with server(tmp_path / "app", "server.thread_pool = 1\n") as proc:
        hung = socket.create_connection(("127.0.0.1", proc.port))  # type: ignore[attr-defined]
        waiting: list[socket.socket] = []
        try:
            hung.sendall(b"GET /hang?seconds=20 HTTP/1.1\r\nHost: x\r\n\r\n")
            time.sleep(0.5)
            for _ in range(150):
                sock = socket.create_connection(("127.0.0.1", proc.port))  # type: ignore[attr-defined]
                waiting.append(sock)
                sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            time.sleep(1.0)  # a refusal is immediate; the queue timeout (5 s) is far off
            for sock in waiting:
                sock.setblocking(False)
            answered = [sock for sock in waiting if _has_data(sock)]
        finally:
            for sock in [hung, *waiting]:
                sock.close()
    assert not answered, f"{len(answered)} of 150 queued requests were answered at once"


def _has_data(sock: socket.socket) -> bool:
    try:
        return bool(sock.recv(1, socket.MSG_PEEK))
    except BlockingIOError:
        return False


def test_a_request_that_waited_too_long_is_answered_503(tmp_path: Path) -> None:
    conf = "server.thread_pool = 1\nserver.accepted_queue_timeout = 1\n"
    with server(tmp_path / "app", conf) as proc:
        address = proc.address  # type: ignore[attr-defined]
        blocker = threading.Thread(target=get, args=(address, "/hang?seconds=2.5"))
        blocker.start()
        time.sleep(0.5)
        conn = http.client.HTTPConnection("127.0.0.1", proc.port, timeout=10)  # type: ignore[attr-defined]
        try:
            conn.request("GET", "/")
            response = conn.getresponse()
            status, retry = response.status, response.getheader("Retry-After")
        finally:
            conn.close()
            blocker.join(20)
    assert (status, retry) == (503, "1")


@pytest.fixture
def receiver(tmp_path: Path) -> Iterator[NotifyReceiver]:
    notify = NotifyReceiver(tmp_path / "notify.sock")
    yield notify
    notify.close()


def _keep_busy(address: str, path: str, clients: int, seconds: float) -> list[threading.Thread]:
    """``clients`` threads sending ``path`` requests back to back for ``seconds``."""

    def loop() -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            with contextlib.suppress(OSError, http.client.HTTPException):
                host, port = address.rsplit(":", 1)
                conn = http.client.HTTPConnection(host, int(port), timeout=20)
                conn.request("GET", path)
                conn.getresponse().read()
                conn.close()

    threads = [threading.Thread(target=loop, daemon=True) for _ in range(clients)]
    for thread in threads:
        thread.start()
    return threads


NOT_ANSWERING = "Not answering: every request thread is busy or stuck"


def test_the_watchdog_pings_while_a_saturated_pool_makes_progress(
    tmp_path: Path, receiver: NotifyReceiver
) -> None:
    env = {"NOTIFY_SOCKET": receiver.path, "WATCHDOG_USEC": "1000000"}  # a check every 0.5 s
    with server(tmp_path / "app", "server.thread_pool = 2\n", env) as proc:
        ready = receiver.wait_for("READY", "1")
        receiver.wait_for("WATCHDOG", "1", start=ready)
        # 10 clients on 2 threads, 0.3 s each: a request waits ~1.5 s for a thread, longer
        # than a watchdog period, while one completes every ~0.15 s
        busy = _keep_busy(proc.address, "/slow?seconds=0.3", clients=10, seconds=4)  # type: ignore[attr-defined]
        with crowd(proc.port, "silent", count=50):  # type: ignore[attr-defined]
            receiver.poll()
            mark = len(receiver.messages)
            for thread in busy:
                thread.join(30)
        receiver.poll()
        during = receiver.messages[mark:]
    assert not [m for m in during if m.get("STATUS") == NOT_ANSWERING], during
    assert sum("WATCHDOG" in m for m in during) >= 5, during
    assert "watchdog: no request thread answered" not in proc.output()


def test_the_watchdog_pings_while_slow_readers_hold_every_thread(
    tmp_path: Path, receiver: NotifyReceiver
) -> None:
    # 16 MiB at 4 KiB/s: more than the kernel's send buffers take, so each of the 10 threads
    # stays inside one send() for as long as its reader reads. A receive window that small
    # opens about once a second, so the check here comes every 2 s (the defaults: 15 s).
    env = {"NOTIFY_SOCKET": receiver.path, "WATCHDOG_USEC": "4000000"}
    with server(tmp_path / "app", env=env) as proc:
        ready = receiver.wait_for("READY", "1")
        receiver.wait_for("WATCHDOG", "1", start=ready)
        with crowd(proc.port, "slowread", count=12, mib=16):  # type: ignore[attr-defined]
            receiver.poll()
            mark = len(receiver.messages)
            time.sleep(7)
            receiver.poll()
        during = receiver.messages[mark:]
    assert not [m for m in during if m.get("STATUS") == NOT_ANSWERING], during
    assert sum("WATCHDOG" in m for m in during) >= 3, during


def test_the_watchdog_stops_pinging_while_the_app_hangs_among_slow_clients(
    tmp_path: Path, receiver: NotifyReceiver
) -> None:
    env = {"NOTIFY_SOCKET": receiver.path, "WATCHDOG_USEC": "1000000"}
    with server(tmp_path / "app", "server.thread_pool = 2\n", env) as proc:
        ready = receiver.wait_for("READY", "1")
        receiver.wait_for("WATCHDOG", "1", start=ready)
        # trickling clients keep the selector busy; that is no progress of the app
        with crowd(proc.port, "trickle", count=50):  # type: ignore[attr-defined]
            receiver.poll()
            mark = len(receiver.messages)
            hung = _keep_busy(proc.address, "/hang?seconds=5", clients=2, seconds=0.1)  # type: ignore[attr-defined]
            stuck = receiver.wait_for("STATUS", NOT_ANSWERING, start=mark, timeout=4)
            time.sleep(1.6)  # three more periods
            receiver.poll()
            assert "WATCHDOG" not in receiver.states()[stuck + 1 :], receiver.messages[stuck:]
            for thread in hung:
                thread.join(20)
        receiver.wait_for("WATCHDOG", "1", start=stuck + 1)  # and resume once it answers
