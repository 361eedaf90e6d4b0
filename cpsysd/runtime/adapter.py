"""The bus side of a listener's server (:class:`ListenerServer`): CherryPy's ServerAdapter for
:class:`~cpsysd.runtime.server.ListenerHTTPServer`, on CherryPy's engine or the lean bus."""

from __future__ import annotations

import socket
import sys
import threading
import time
from typing import Any

from cpsysd.runtime.listeners import Binding
from cpsysd.runtime.server import TUNABLES, ListenerHTTPServer, OpenConnections


class ListenerServer:
    """The bus side of one listener's server, as CherryPy's ServerAdapter (start at priority
    75, stop at 25) but without its port-free/occupied waits; on CherryPy's engine or the
    :class:`~cpsysd.runtime.bus.LeanBus`. ``settings`` are the TUNABLES (every one of them),
    ``wsgi_app`` what it serves (``cherrypy.tree`` for a CherryPy app); ``version`` the server
    name cheroot reports (CherryPy's "CherryPy/x Cheroot/y" for a CherryPy app)."""

    # TUNABLES, set from ``settings``
    socket_timeout: int
    accepted_queue_size: int
    accepted_queue_timeout: int
    shutdown_timeout: int
    protocol_version: str
    thread_pool: int
    thread_pool_max: int
    max_request_header_size: int
    max_request_body_size: int
    max_request_header_count: int
    statistics: bool
    wsgi_version: tuple[int, int]
    peercreds: bool
    peercreds_resolve: bool

    def __init__(
        self,
        bus: Any,
        binding: Binding,
        settings: dict[str, Any],
        wsgi_app: Any,
        ssl_adapter: Any = None,
        open_connections: OpenConnections | None = None,
        version: str | None = None,
    ) -> None:
        self.bus = bus
        for name in TUNABLES:
            setattr(self, name, settings[name])
        self.binding = binding
        self.wsgi_app = wsgi_app
        self.version = version
        self.running = False
        self.interrupt: BaseException | None = None
        sockname = binding.sock.getsockname()
        self.bind_addr: Any = (
            binding.address if binding.sock.family == socket.AF_UNIX else tuple(sockname[:2])
        )
        self.httpserver = ListenerHTTPServer(self, binding, ssl_adapter, open_connections)

    @property
    def description(self) -> str:
        return self.binding.url

    def subscribe(self) -> None:
        self.bus.subscribe("start", self.start, 75)
        self.bus.subscribe("stop", self.stop, 25)

    def start(self) -> None:
        if self.running:
            return
        self.interrupt = None
        thread = threading.Thread(
            target=self._start_http_thread, name=f"HTTPServer {self.binding.url}"
        )
        thread.start()
        self.wait()
        self.running = True
        self.bus.log(f"Serving on {self.binding.url}")

    def _start_http_thread(self) -> None:
        """As CherryPy's: an error in the server's thread stops the whole bus."""
        try:
            self.httpserver.start()
        except (KeyboardInterrupt, SystemExit):
            self.interrupt = sys.exc_info()[1]
            self.bus.exit()
        except Exception:
            self.interrupt = sys.exc_info()[1]
            self.bus.log("Error in HTTP server: shutting down", traceback=True, level=40)
            self.bus.exit()
            raise

    def wait(self) -> None:
        while not getattr(self.httpserver, "ready", False):
            if self.interrupt:
                raise self.interrupt
            time.sleep(0.001)

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
