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
as plain IPv4. :class:`ListenerServer` is the CherryPy ServerAdapter for it, without port waits.
"""

from __future__ import annotations

import queue
import socket
import threading
import time
from typing import Any

import cherrypy
from cheroot.makefile import MakeFile
from cheroot.server import _STOPPING_FOR_INTERRUPT, HTTPConnection  # type: ignore[attr-defined]
from cheroot.workers import threadpool
from cherrypy._cpserver import Server
from cherrypy._cpwsgi_server import CPWSGIServer

from cpsysd.runtime.accepting import BackoffConnections
from cpsysd.runtime.framing import MAX_HEADER_COUNT, GuardedRequest
from cpsysd.runtime.listeners import Binding

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
# site's client_max_body_size, so the two agree.
DEFAULTS: dict[str, int] = {
    "max_request_body_size": 10 * 1024 * 1024,
    "max_request_header_count": MAX_HEADER_COUNT,
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

    def close(self) -> None:
        # cheroot may close a connection twice (a worker, then the selector's clean-up); it is
        # counted once.
        counted, self._counted = self._counted, None
        try:
            super().close()
        finally:
            if counted is not None:
                counted.closed()

    @property
    def remote_addr(self) -> str | None:
        return self._remote_addr

    @remote_addr.setter
    def remote_addr(self, value: str | None) -> None:
        if value is not None and value.startswith(_V4_MAPPED) and "." in value:
            value = value[len(_V4_MAPPED) :]
        self._remote_addr = value


class _Probe:
    """Queued like a connection: the worker that picks it up proves the pool still answers."""

    requests_seen = 0
    remote_addr = remote_port = "watchdog-probe"

    def __init__(self) -> None:
        self.answered = threading.Event()
        self.rfile = self.wfile = self  # for cheroot's worker statistics
        self.bytes_read = self.bytes_written = 0

    def communicate(self) -> bool:
        self.answered.set()
        return False  # "do not keep the connection": the worker calls close()

    def close(self) -> None:
        pass


class _WorkerPool(threadpool.ThreadPool):
    """cheroot's pool with daemon threads, a non-blocking ``try_put`` and a bounded ``stop``."""

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

    def try_put(self, item: object) -> bool:
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
        for _ in workers:
            self._queue.put(threadpool._SHUTDOWNREQUEST)  # type: ignore[attr-defined]
        for worker in workers:
            worker.join(max(0.0, deadline - time.monotonic()))
        return sum(1 for worker in workers if worker.is_alive())


class ListenerHTTPServer(CPWSGIServer):  # type: ignore[misc]
    """CherryPy's WSGI server serving one pre-bound, listening socket."""

    ConnectionClass = _Connection

    def __init__(
        self,
        adapter: ListenerServer,
        binding: Binding,
        ssl_adapter: Any = None,
        open_connections: OpenConnections | None = None,
    ) -> None:
        super().__init__(adapter)
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
        self.deadline: float | None = None  # set by begin_stop(); time.monotonic()
        self._probe: _Probe | None = None

    def prepare(self) -> None:
        """cheroot's prepare() without creating, binding or listen()ing a socket."""
        self._interrupt = None
        if self.software is None:  # type: ignore[has-type]
            self.software = f"{self.version} Server"
        self.socket = self.binding.sock
        # As cheroot does: accept() in the selector thread never blocks for long. Note that
        # O_NONBLOCK is shared with systemd's copy of the socket, which systemd does not mind.
        self.socket.settimeout(1)
        self._connections = BackoffConnections(self)
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

    def probe(self) -> bool | None:
        """Watchdog liveness: True when a worker picked up the probe queued by the previous
        call, False when it is still waiting (every worker busy or stuck), None right after
        queueing the first one. The selector thread must be alive too."""
        if not self.ready or not self._connections._serving:  # type: ignore[attr-defined]
            return False
        probe = self._probe
        if probe is not None and not probe.answered.is_set():
            return False
        self._probe = _Probe()
        if not self.requests.try_put(self._probe):
            return False
        return None if probe is None else True


class ListenerServer(Server):  # type: ignore[misc]
    """A CherryPy ServerAdapter for one listener: subscribed to the engine like
    ``cherrypy.server`` (start at priority 75, stop at 25), without port-free/occupied waits."""

    def __init__(
        self,
        binding: Binding,
        ssl_adapter: Any = None,
        template: Server | None = None,
        open_connections: OpenConnections | None = None,
    ) -> None:
        super().__init__()
        template = template if template is not None else cherrypy.server
        for name in TUNABLES:
            configured = f"server.{name}" in cherrypy.config or name not in DEFAULTS
            setattr(self, name, getattr(template, name) if configured else DEFAULTS[name])
        self.binding = binding
        sockname = binding.sock.getsockname()
        self.bind_addr = (
            binding.address if binding.sock.family == socket.AF_UNIX else tuple(sockname[:2])
        )
        self.httpserver = ListenerHTTPServer(self, binding, ssl_adapter, open_connections)

    @property
    def description(self) -> str:
        return self.binding.url

    def start(self) -> None:
        if self.running:  # type: ignore[has-type]
            return
        self.interrupt = None
        thread = threading.Thread(
            target=self._start_http_thread, name=f"HTTPServer {self.binding.url}"
        )
        thread.start()
        self.wait()
        self.running = True
        self.bus.log(f"Serving on {self.binding.url}")

    start.priority = 75  # type: ignore[attr-defined]

    def wait(self) -> None:
        while not getattr(self.httpserver, "ready", False):
            if self.interrupt:
                raise self.interrupt
            time.sleep(0.01)

    def stop(self) -> None:
        if not self.running:
            return
        self.httpserver.stop()
        self.running = False
        if self.httpserver.abandoned:
            self.bus.log(
                f"{self.binding.url}: {self.httpserver.abandoned} request(s) still running "
                "at the stop deadline were abandoned",
                level=30,
            )
        self.bus.log(f"Stopped serving on {self.binding.url}")

    stop.priority = 25  # type: ignore[attr-defined]
