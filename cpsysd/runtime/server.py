"""cheroot servers on sockets that are already bound and listening.

CherryPy's own path is wrong for passed sockets (see FINDINGS.md): cheroot's ``prepare()`` turns
fd 3 into an AF_INET socket whenever LISTEN_PID exists (garbled IPv6 client addresses, hung unix
sockets, other fds ignored), calls ``listen()`` again (which would shrink systemd's Backlog= to
CherryPy's 5), and CherryPy's ServerAdapter waits for ports to become free or occupied (a passed
port is never free), while cheroot's ``stop()`` connects to its own socket to wake ``accept()``,
which would leave a connection in systemd's queue and start the service again right after a stop.

Here: :class:`ListenerHTTPServer` is CherryPy's WSGI server with ``prepare()`` taking the given
socket as it is, a ``stop()`` split into "stop accepting" and "let in-flight requests finish until
a deadline", daemon worker threads (a request still running at the deadline cannot block exit), a
liveness probe for the watchdog, and connections that report IPv4 clients of a dual-stack socket
as plain IPv4. :class:`~cpsysd.runtime.adapter.ListenerServer` is the CherryPy ServerAdapter
for it, without port waits.
"""

from __future__ import annotations

import queue
import socket
import threading
import time
from typing import TYPE_CHECKING, Any

import cheroot.wsgi
from cheroot.makefile import MakeFile
from cheroot.server import _STOPPING_FOR_INTERRUPT, HTTPConnection  # type: ignore[attr-defined]
from cheroot.workers import threadpool

from cpsysd.runtime import sockio
from cpsysd.runtime.framing import MAX_HEADER_COUNT, GuardedRequest
from cpsysd.runtime.gate import RETRY_AFTER, GatedConnections, answer_and_close
from cpsysd.runtime.listeners import Binding

if TYPE_CHECKING:
    from cpsysd.runtime.adapter import ListenerServer

# CherryPy `server.*` settings copied from cherrypy.server (where the app's [global] config puts
# them) to every listener's server. socket_host/port/file and ssl_* do not apply: the listeners
# come from the app description, TLS from its [tls] table.
TUNABLES = (
    "socket_timeout",
    "accepted_queue_size",
    "accepted_queue_timeout",
    "shutdown_timeout",
    "protocol_version",
    "thread_pool",
    "thread_pool_max",
    "max_request_header_size",
    "max_request_body_size",
    "max_request_header_count",  # cpsysd's own: header fields per request (framing.py)
    "statistics",
    "wsgi_version",
    "peercreds",
    "peercreds_resolve",
)
# Where the app's config does not set them. CherryPy's body limit is 100 MiB, and a 100 MB
# urlencoded upload was measured to cost 280-350 MiB of RSS; 10 MiB is the generated nginx
# site's client_max_body_size, so the two agree. CherryPy's queue for a free worker has no bound
# (-1) and its timeout (10 s) only made the accepting thread wait: here past 500 queued
# requests, or after 5 s in the queue, a request is answered 503 (gate.py). 500: with 100,
# 500 connections at overload (bench/overload.py, two instances) got a third of their
# answers as 503 although the queue ahead of them was 30-40 ms of work; with 500 they were
# served in order with a p99 below gunicorn's, and the 5 s bound still caps a slow app.
DEFAULTS: dict[str, int] = {
    "max_request_body_size": 10 * 1024 * 1024,
    "max_request_header_count": MAX_HEADER_COUNT,
    "accepted_queue_size": 500,
    "accepted_queue_timeout": 5,
}
# CherryPy's own defaults of the other TUNABLES (cherrypy/_cpserver.py), for a WSGI app served
# without importing CherryPy (its config file is what could change them, and it has none).
CHERRYPY_DEFAULTS: dict[str, Any] = {
    "socket_timeout": 10,
    "shutdown_timeout": 5,
    "protocol_version": "HTTP/1.1",
    "thread_pool": 10,
    "thread_pool_max": -1,
    "max_request_header_size": 500 * 1024,
    "statistics": False,
    "wsgi_version": (1, 0),
    "peercreds": False,
    "peercreds_resolve": False,
    **DEFAULTS,
}
_V4_MAPPED = "::ffff:"


class OpenConnections:
    """How many client connections are open across every listener, and since when none is:
    what ``idle_stop_sec`` measures. A connection counts from accept() to close(), so a request
    in flight and an idle keep-alive connection both keep the app from idling out."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._open = 0
        self._idle_since = time.monotonic()

    def opened(self) -> None:
        with self._lock:
            self._open += 1

    def closed(self) -> None:
        with self._lock:
            self._open -= 1
            if not self._open:
                self._idle_since = time.monotonic()

    def idle_for(self) -> float:
        """Seconds since the last connection closed (since start if none came); 0 while any
        is open."""
        with self._lock:
            return time.monotonic() - self._idle_since if not self._open else 0.0


class _Connection(HTTPConnection):
    """A connection with TCP_NODELAY, whose ``remote_addr`` shows a v4-mapped IPv6 address
    (``::ffff:127.0.0.1``, what accept() returns for IPv4 clients of a dual-stack socket,
    ipv6(7)) as the IPv4 address, exactly what an AF_INET socket would report. Both run once
    per connection, not per request."""

    _remote_addr: str | None = None
    _counted: OpenConnections | None = None

    def __init__(self, server: Any, sock: socket.socket, makefile: Any = MakeFile) -> None:
        super().__init__(server, sock, makefile)
        # Per instance: CherryPy's CPWSGIServer.__init__ sets the class attribute to its own.
        self.RequestHandlerClass = GuardedRequest
        self._counted = server.open_connections
        if self._counted is not None:
            self._counted.opened()
        if sock.family != socket.AF_UNIX:
            # The listener's TCP_NODELAY reaches only connections established after it was
            # set: the very connection that made systemd start us (queued while we started)
            # would otherwise wait ~40 ms on every keep-alive response (Nagle, tcp(7)).
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    linger = False  # set by a request refused before its body was read (framing.py)

    def close(self) -> None:
        # cheroot may close a connection twice (a worker, then the selector's clean-up); it is
        # counted once.
        counted, self._counted = self._counted, None
        try:
            if self.linger:
                self.linger = False
                sockio.lingering_close(self.socket)
            super().close()
        finally:
            if counted is not None:
                counted.closed()

    def communicate(self) -> bool:
        """cheroot's communicate() (one request), refused with 503 when the request waited
        longer than ``accepted_queue_timeout`` for this worker, and counted when it ends: the
        watchdog's measure of progress."""
        queued_at: float | None = getattr(self, "queued_at", None)
        self.queued_at = None
        wait = self.server.queue_timeout
        if queued_at is not None and wait > 0 and time.monotonic() - queued_at > wait:
            self.server.refused += 1
            answer_and_close(self, "503 Service Unavailable", f"Retry-After: {RETRY_AFTER}\r\n")
            return False
        try:
            keep: bool = super().communicate()  # type: ignore[no-untyped-call]
        finally:
            self.server.completed += 1
        return keep

    @property
    def remote_addr(self) -> str | None:
        return self._remote_addr

    @remote_addr.setter
    def remote_addr(self, value: str | None) -> None:
        if value is not None and value.startswith(_V4_MAPPED) and "." in value:
            value = value[len(_V4_MAPPED) :]
        self._remote_addr = value


class _WorkerPool(threadpool.ThreadPool):
    """cheroot's pool with daemon threads, a non-blocking ``try_put`` and a bounded ``stop``.

    A worker that hands back a kept-alive connection whose next request has arrived already
    (gate.py's put()) keeps it when nothing else waits in the queue: it is served next by the
    same thread, without waking another one and passing the GIL to it (measured as the
    largest share of the futex(2) calls per request). With anything queued it goes to the
    back of the queue, so a busy connection never overtakes a waiting one."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._local = threading.local()  # .worker: a thread of this pool; .next: its own
        self.get = self._next  # cheroot's workers call pool.get(), set to its queue's get

    def _spawn_worker(self) -> threadpool.WorkerThread:
        worker = threadpool.WorkerThread(self.server)  # type: ignore[no-untyped-call]
        worker.name = f"CP Server {worker.name}"
        worker.daemon = True  # past the stop deadline, a stuck request must not keep us alive
        worker.start()
        return worker

    def grow(self, amount: int) -> None:
        """cheroot's grow(), polling for ready threads every millisecond instead of every
        100 ms: a socket-activated service answers its first request ~0.1 s sooner."""
        threads: list[threading.Thread] = self._threads  # type: ignore[attr-defined]
        budget = self.max - len(threads)  # self.max may be float("inf"): no limit
        workers = [
            self._spawn_worker() for _ in range(amount if budget >= amount else max(0, int(budget)))
        ]
        for worker in workers:
            while not worker.ready:
                time.sleep(0.001)
        threads.extend(workers)

    def _next(self) -> Any:
        """The connection a worker serves next: its own kept one, else the queue's first."""
        local = self._local
        item = getattr(local, "next", None)
        if item is not None:
            local.next = None
            return item
        local.worker = True
        return self._queue.get()  # type: ignore[attr-defined]

    def try_put(self, item: object) -> bool:
        local = self._local
        if (
            getattr(local, "worker", False)
            and getattr(local, "next", None) is None
            and not self._queue.qsize()  # type: ignore[attr-defined]
        ):
            local.next = item
            return True
        try:
            self._queue.put_nowait(item)  # type: ignore[attr-defined]
        except queue.Full:
            return False
        return True

    def stop(self, timeout: float | None = 5) -> None:
        self.stop_until(time.monotonic() + (timeout if timeout is not None else 1e9))

    def stop_until(self, deadline: float) -> int:
        """Ask every worker to exit after its current request; wait until ``deadline``.
        Returns how many were still busy then (cheroot's own stop() would wait for ever)."""
        threads: list[threading.Thread] = self._threads  # type: ignore[attr-defined]
        workers = [t for t in threads if t is not threading.current_thread()]
        threads[:] = []
        for _ in workers:  # the queue is bounded now: never wait past the deadline for room
            left = max(0.001, deadline - time.monotonic())
            try:
                self._queue.put(threadpool._SHUTDOWNREQUEST, timeout=left)  # type: ignore[attr-defined]
            except queue.Full:
                break
        for worker in workers:
            worker.join(max(0.0, deadline - time.monotonic()))
        return sum(1 for worker in workers if worker.is_alive())


# Untyped as CherryPy's CPWSGIServer was (cheroot's stubs do not know our attributes).
_WSGIServer: Any = cheroot.wsgi.Server


class ListenerHTTPServer(_WSGIServer):  # type: ignore[misc]
    """cheroot's WSGI server serving one pre-bound, listening socket, set up from its
    :class:`ListenerServer` as CherryPy's ``CPWSGIServer`` is from ``cherrypy.server`` (but
    without importing CherryPy, which a WSGI app does not need)."""

    ConnectionClass = _Connection

    def __init__(
        self,
        adapter: ListenerServer,
        binding: Binding,
        ssl_adapter: Any = None,
        open_connections: OpenConnections | None = None,
    ) -> None:
        super().__init__(
            adapter.bind_addr,
            adapter.wsgi_app,
            adapter.thread_pool,
            adapter.bind_addr if isinstance(adapter.bind_addr, str) else adapter.bind_addr[0],
            max=adapter.thread_pool_max,
            timeout=adapter.socket_timeout,
            shutdown_timeout=adapter.shutdown_timeout,
            peercreds_enabled=adapter.peercreds,
            peercreds_resolve_enabled=adapter.peercreds_resolve,
        )
        self.adapter = adapter
        if adapter.version is not None:
            self.version = adapter.version
        self.max_request_header_size = adapter.max_request_header_size or 0
        self.max_request_body_size = adapter.max_request_body_size or 0
        self.wsgi_version = adapter.wsgi_version
        self.protocol = adapter.protocol_version
        self.stats["Enabled"] = adapter.statistics
        self.binding = binding
        self.open_connections = open_connections  # counted only for idle_stop_sec
        self.requests = _WorkerPool(
            self,
            min=adapter.thread_pool or 1,
            max=adapter.thread_pool_max,
            accepted_queue_size=adapter.accepted_queue_size,
            accepted_queue_timeout=adapter.accepted_queue_timeout,
        )
        self.ssl_adapter = ssl_adapter
        if binding.sock.family == socket.AF_UNIX:
            # X_REMOTE_PID/UID/GID in the environ: on a unix socket the peer's credentials
            # (SO_PEERCRED, unix(7)) are what identifies the client; there is no address.
            self.peercreds_enabled = True
        self.abandoned = 0
        # cheroot answers "Connection: close" whenever more than 10 connections wait in its
        # selector (idle keep-alive ones, and here those whose header block is not complete):
        # at 64 busy connections, or beside 10 slow clients, every request then paid a new
        # TCP connection, and under overload the reconnects queued behind each other. Idle
        # connections are bounded by socket_timeout (closed after it) and by descriptors
        # (accepting.py); half the descriptor limit leaves the rest for requests and files.
        self.keep_alive_conn_limit = max(10, sockio.descriptor_limit() // 2)
        self.deadline: float | None = None  # set by begin_stop(); time.monotonic()
        # seconds a request may wait for a worker; the bound on their number is the queue's
        self.queue_timeout = float(adapter.accepted_queue_timeout or 0)
        self.completed = 0  # requests that ended (the watchdog's measure of progress)
        self.refused = 0  # requests answered 503 because the queue was full or too slow
        self._progress: int | None = None  # completed + bytes moved at the previous probe

    def error_log(self, msg: str = "", level: int = 20, traceback: bool = False) -> None:
        """To the bus's log, as CherryPy's server does (cheroot's own writes to stderr)."""
        self.adapter.bus.log(msg, level, traceback)

    def prepare(self) -> None:
        """cheroot's prepare() without creating, binding or listen()ing a socket."""
        self._interrupt = None
        if self.software is None:  # type: ignore[has-type]
            self.software = f"{self.version} Server"
        self.socket = self.binding.sock
        # As cheroot does: accept() in the selector thread never blocks for long. Note that
        # O_NONBLOCK is shared with systemd's copy of the socket, which systemd does not mind.
        self.socket.settimeout(1)
        self._connections = GatedConnections(self)
        self.requests.start()
        self.ready = True
        self._start_time = time.time()

    def begin_stop(self, deadline: float) -> None:
        """Phase 1 of a graceful stop: no new connections, idle keep-alive connections closed.
        Requests being served go on until ``deadline`` (time.monotonic()). Our copy of the
        listening socket is dropped; systemd keeps its own, where new clients wait for the
        next start."""
        if self.deadline is None:
            self.deadline = deadline
        if not self.ready:
            return
        self.ready = False
        # cheroot >= 10 has a thread for connections over the pool's capacity, woken here;
        # Debian bookworm's cheroot 9.0 has no such queue.
        unservicable = getattr(self, "_unservicable_conns", None)
        if unservicable is not None:
            unservicable.put(_STOPPING_FOR_INTERRUPT)
        if self._start_time is not None:
            self._run_time += time.time() - self._start_time
            self._start_time = None  # type: ignore[assignment]
        self._connections.stop()  # ends the selector loop (<= expiration_interval)
        self.socket = None  # type: ignore[assignment]
        self._connections.close()
        if not self.binding.adopted:
            self.binding.sock.close()  # ours alone: new clients are refused, not left waiting

    def stop(self) -> None:
        """Phase 2 (after :meth:`begin_stop`, or both phases bounded by ``shutdown_timeout``):
        let in-flight requests complete until the deadline. Unlike cheroot's stop(), never
        connects to its own socket and never waits past the deadline."""
        self.begin_stop(time.monotonic() + float(self.shutdown_timeout))
        assert self.deadline is not None
        self.abandoned = self.requests.stop_until(self.deadline)

    def process_conn(self, conn: Any) -> None:
        """To the worker pool once the header block is complete (gate.py), not before."""
        self._connections.admit(conn)

    def probe(self) -> bool | None:
        """Watchdog liveness, from progress rather than a free worker: False when the selector
        loop has stopped turning, or when every worker is busy and since the previous call no
        request completed and no busy connection moved a byte (a hung app); True while a
        worker is free or work progresses; None on the first call with every worker busy."""
        if not self.ready or not self._connections._serving:  # type: ignore[attr-defined]
            return False
        # The loop turns every 0.5 s; a TLS handshake in it may take up to socket_timeout.
        if time.monotonic() - self._connections.heartbeat > float(self.timeout) + 2:
            return False
        threads: list[Any] = list(self.requests._threads)  # type: ignore[attr-defined]
        busy = [conn for conn in (getattr(t, "conn", None) for t in threads) if conn is not None]
        progress = self.completed + sum(sockio.bytes_moved(conn) for conn in busy)
        previous, self._progress = self._progress, progress
        if len(busy) < len(threads):
            return True
        return None if previous is None else progress != previous
