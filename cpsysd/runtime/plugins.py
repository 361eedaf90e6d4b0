"""CherryPy bus plugins that give ``cpsysd serve`` the systemd service lifecycle.

Priorities on the engine's channels (lower runs first; CherryPy's servers start at 75 and stop
at 25, Daemonizer starts at 65, PIDFile at 70, DropPrivileges at 77):

- start 80, :class:`NotifyPlugin`: ``READY=1`` and ``STATUS=`` once every server accepts, unless
  a start listener of the app failed (CherryPy runs the others anyway).
- start 85 / stop 5, :class:`WatchdogPlugin`: pings only while the app answers.
- start 90 / stop 5, :class:`IdleStopPlugin` (``idle_stop_sec``): after that long with no open
  connection, the engine exits from its thread (the stop below, then exit 0); systemd's sockets
  keep listening and the next connection starts the service again.
- stop 10, :class:`NotifyPlugin`: ``STOPPING=1``, with the reason when the stop is an idle one.
- stop 20, :class:`GracefulStopPlugin`: every server stops accepting at once and closes idle
  keep-alive connections; the servers' own stop (25) then waits for in-flight requests until
  one shared deadline (``timeout_stop_sec`` minus a margin, so we exit before systemd's
  SIGKILL).
- SIGHUP, :class:`Reloader`: ``RELOADING=1``, re-read the CherryPy config and the TLS files,
  CherryPy's ``graceful`` channel (log files reopened), ``READY=1``. CherryPy's own SIGHUP
  handling exits (or re-executes, losing the passed sockets); systemd's ``ExecReload=kill -HUP``
  means "reload".
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from cpsysd.errors import CpsysdError
from cpsysd.runtime import notify
from cpsysd.runtime.bus import Plugin
from cpsysd.runtime.journal import AccessSink, configure_logging
from cpsysd.runtime.watchdog import Watchdog

if TYPE_CHECKING:
    from cpsysd.runtime.adapter import ListenerServer
    from cpsysd.runtime.app import ServedApp
    from cpsysd.runtime.renewal import RenewalStatus
    from cpsysd.runtime.server import OpenConnections

STOP_MARGIN = 1.0  # seconds kept from TimeoutStopSec= for exiting after the last request


def serving_status(name: str, servers: Sequence[ListenerServer]) -> str:
    """The STATUS= text while serving, e.g. ``Serving hello on http://[::]:8080``."""
    return f"Serving {name} on " + ", ".join(server.binding.url for server in servers)


class NotifyPlugin(Plugin):
    """READY=1 after the servers start; STOPPING=1 when the engine stops."""

    def __init__(self, bus: Any, status_text: str, renewal: RenewalStatus | None = None) -> None:
        super().__init__(bus)
        self.status_text = status_text
        self.renewal = renewal  # an ACME certificate: a failing renewal joins the STATUS=
        self.stop_reason: str | None = None  # the STATUS= sent with STOPPING=1, when not SIGTERM
        self.failed_start: str | None = None  # the first start listener that raised

    def log(self, msg: str, level: int = 20, traceback: bool = False) -> None:
        # CherryPy's bus runs every start listener even after one raised (wspbus.publish), logs
        # "Error in 'start' listener ..." at ERROR and raises only at the end: without this,
        # READY=1 would tell systemd (and clients, install, try) that an app whose own start
        # hook failed is up, until the engine exits a moment later.
        if level >= 40 and self.failed_start is None and msg.startswith("Error in 'start'"):
            self.failed_start = msg.splitlines()[0]

    def start(self) -> None:
        if self.failed_start is not None:
            notify.status(f"Start failed: {self.failed_start}")
            return
        renewal = self.renewal
        notify.ready(renewal.compose(self.status_text) if renewal else self.status_text)

    start.priority = 80  # type: ignore[attr-defined]

    def stop(self) -> None:
        if self.stop_reason is None:
            notify.stopping()
        else:
            notify.stopping(self.stop_reason)

    stop.priority = 10  # type: ignore[attr-defined]


class GracefulStopPlugin(Plugin):
    """Stop accepting on every server at once, with one deadline for in-flight requests."""

    def __init__(self, bus: Any, servers: Sequence[ListenerServer], timeout: float) -> None:
        super().__init__(bus)
        self.servers = list(servers)
        self.timeout = timeout

    def stop(self) -> None:
        deadline = time.monotonic() + max(0.5, self.timeout - STOP_MARGIN)
        # In parallel: each server's accept loop takes up to half a second to notice.
        threads = [
            threading.Thread(
                target=server.httpserver.begin_stop, args=(deadline,), name="cpsysd-stop"
            )
            for server in self.servers
            if server.running
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

    stop.priority = 20  # type: ignore[attr-defined]


class WatchdogPlugin(Plugin):
    """Runs a :class:`~cpsysd.runtime.watchdog.Watchdog` while the engine is started."""

    def __init__(self, bus: Any, watchdog: Watchdog) -> None:
        super().__init__(bus)
        self.watchdog = watchdog

    def start(self) -> None:
        self.watchdog.start()

    start.priority = 85  # type: ignore[attr-defined]

    def stop(self) -> None:
        self.watchdog.stop()

    stop.priority = 5  # type: ignore[attr-defined]


class IdleStopPlugin(Plugin):
    """Exit once no connection has been open for ``idle_sec`` (see the module docstring).

    The check runs in a thread of its own which then runs ``bus.exit()`` itself. It is not a
    daemon thread: the main thread's ``bus.block()`` waits for it to finish the exit channel
    before the process exits. A connection accepted between the check and the stop is served
    like one during a SIGTERM stop; one still in systemd's queue starts the next instance.
    """

    def __init__(
        self, bus: Any, connections: OpenConnections, idle_sec: float, notifier: NotifyPlugin
    ) -> None:
        super().__init__(bus)
        self.connections = connections
        self.idle_sec = idle_sec
        self.notifier = notifier
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._stopped.clear()
        self._thread = threading.Thread(target=self._watch, name="cpsysd-idle-stop")
        self._thread.start()

    start.priority = 90  # type: ignore[attr-defined]

    def stop(self) -> None:
        self._stopped.set()
        thread, self._thread = self._thread, None
        if thread is not None and thread is not threading.current_thread():
            thread.join()

    stop.priority = 5  # type: ignore[attr-defined]

    def _watch(self) -> None:
        while not self._stopped.is_set():
            remaining = self.idle_sec - self.connections.idle_for()
            if remaining > 0 or self.bus.state != self.bus.states.STARTED:
                # A connection may open and close meanwhile: look again at most a second later.
                self._stopped.wait(min(1.0, max(remaining, 0.1)))
                continue
            reason = f"idle for {self.idle_sec:g} s with no connection open (idle_stop_sec)"
            self.notifier.stop_reason = f"Stopping: {reason}; the next connection starts it again"
            self.bus.log(f"Stopping: {reason}")
            self.bus.exit()
            return


class Reloader:
    """What SIGHUP does (see the module docstring). A file that fails to load leaves the
    running config or certificate in place; the failure is logged and shown in STATUS=."""

    def __init__(
        self,
        bus: Any,
        served: ServedApp,
        sink: AccessSink,
        servers: Sequence[ListenerServer],
        status_text: str,
        log: Callable[..., object],
        renewal: RenewalStatus | None = None,
    ) -> None:
        self.bus = bus
        self.renewal = renewal
        self.served = served
        self.sink = sink
        self.servers = list(servers)
        self.status_text = status_text
        self.log = log
        self.reloads = 0

    def reload(self) -> None:
        notify.reloading()
        problems: list[str] = []
        try:
            self.served.reload()
        except CpsysdError as err:
            problems.append(err.one_line())
        configure_logging(self.sink, self.served.log_screen)
        for server in self.servers:
            adapter = server.httpserver.ssl_adapter
            if adapter is None:
                continue
            from cpsysd.runtime.tls import ContextSSLAdapter, reload_adapter  # TLS apps only

            if isinstance(adapter, ContextSSLAdapter):
                try:
                    reload_adapter(adapter, self.served.spec.tls)
                except CpsysdError as err:
                    problems.append(f"{server.binding.url}: {err.one_line()}")
        self.bus.graceful()  # CherryPy's reload channel: log files reopened, thread data reset
        self.reloads += 1
        for problem in problems:
            self.log(f"reload failed, keeping the previous settings: {problem}", "CPSYSD", 40)
        status = (
            self.status_text
            if not problems
            else f"{self.status_text}; last reload failed: {problems[0]}"
        )
        if not problems:
            self.log("configuration and TLS files reloaded", "CPSYSD")
        if self.renewal is not None:
            self.renewal.status_text = status  # what its polls append the failure to
            status = self.renewal.compose(status)
        notify.ready(status)


class Signals:
    """SIGTERM and SIGINT stop gracefully, SIGHUP reloads. A signal that arrives while the
    engine is still starting is held until it has started: CherryPy's bus.exit() during the
    start ends the process with os._exit(70), and a reload then would send READY=1 before
    every server listens."""

    def __init__(self, bus: Any, reloader: Reloader, pending: set[str] | None = None) -> None:
        self.bus = bus
        self.reloader = reloader
        self.pending: set[str] = set(pending or ())

    def stop(self) -> None:
        if self.bus.state == self.bus.states.STARTING:
            self.pending.add("stop")
        else:
            self.bus.exit()

    def reload(self) -> None:
        if self.bus.state != self.bus.states.STARTED:
            self.pending.add("reload")
        else:
            self.reloader.reload()

    def install(self) -> None:
        """Through CherryPy's SignalHandler (it publishes each signal on a bus channel)."""
        handler = self.bus.signal_handler
        handler.handlers.update({"SIGTERM": self.stop, "SIGINT": self.stop, "SIGHUP": self.reload})
        handler.subscribe()

    def started(self) -> None:
        """Call after bus.start(): act on the signals that were held."""
        if "stop" in self.pending:
            self.bus.exit()
        elif "reload" in self.pending:
            self.reloader.reload()
        self.pending.clear()
