"""The service lifecycle without CherryPy: a small bus for WSGI apps served on cheroot alone.

``import cherrypy`` costs about 60-80 ms of every cold start (tempora, dateutil, jaraco, email,
the whole framework), and a ``kind = "wsgi"`` app needs none of it. The runtime's plugins
(:mod:`~cpsysd.runtime.plugins`) are written against the part of CherryPy's bus
(``cherrypy/process/wspbus.py``) they use: ``subscribe(channel, callback, priority)``,
``publish``, ``state``/``states``, ``start``/``stop``/``exit``/``graceful``/``block``, ``log``
and ``signal_handler.handlers``. :class:`LeanBus` is that part, with the same channel order
(lower priority first) and the same meaning of the states, so one set of plugins runs on either
bus. :class:`Plugin` is CherryPy's ``SimplePlugin`` without importing CherryPy.

Deliberate differences from CherryPy's bus: no re-exec (``restart``), no atexit hook, and
``block()`` waits on an event instead of polling every 0.1 s.
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
import traceback as tb
from collections.abc import Callable
from typing import Any

CHANNELS = ("start", "stop", "exit", "graceful", "log", "main")
_LOG = logging.getLogger("cpsysd")


class _States:
    """CherryPy's bus states by name; compared by identity, as CherryPy's are."""

    STOPPED = "STOPPED"
    STARTING = "STARTING"
    STARTED = "STARTED"
    STOPPING = "STOPPING"
    EXITING = "EXITING"


class Plugin:
    """CherryPy's ``SimplePlugin``: ``subscribe()`` puts every method named after a channel on
    the bus, with its ``priority`` attribute (50 without one). Works on CherryPy's engine too."""

    def __init__(self, bus: Any) -> None:
        self.bus = bus

    def subscribe(self) -> None:
        for channel in CHANNELS:
            method = getattr(self, channel, None)
            if method is not None:
                self.bus.subscribe(channel, method, getattr(method, "priority", 50))


class _SignalHandler:
    """``bus.signal_handler``: ``handlers`` maps a signal name to a callback, installed by
    ``subscribe()`` (main thread only, as signal.signal(2) handlers must be)."""

    def __init__(self) -> None:
        self.handlers: dict[str, Callable[[], object]] = {}

    def subscribe(self) -> None:
        for name, callback in self.handlers.items():
            signal.signal(getattr(signal, name), _handler(callback))


def _handler(callback: Callable[[], object]) -> Callable[[int, Any], None]:
    def handle(signum: int, frame: Any) -> None:
        callback()

    return handle


class LeanBus:
    """The subset of CherryPy's ``wspbus.Bus`` the runtime uses (see the module docstring)."""

    states = _States

    def __init__(self) -> None:
        self.state = _States.STOPPED
        self._listeners: dict[str, list[tuple[int, int, Callable[..., object]]]] = {}
        self._order = 0  # equal priorities run in subscription order
        self._exited = threading.Event()
        self._exit_lock = threading.Lock()
        self.signal_handler = _SignalHandler()
        _LOG.setLevel(logging.INFO)  # as CherryPy's error log: "Serving on ...", "Stopping: ..."

    def subscribe(self, channel: str, callback: Callable[..., object], priority: int = 50) -> None:
        self._order += 1
        self._listeners.setdefault(channel, []).append((priority, self._order, callback))
        self._listeners[channel].sort(key=lambda item: item[:2])

    def publish(self, channel: str, *args: object) -> list[object]:
        """Run every listener; as CherryPy does, one that raises is logged, the others still
        run, and the first error is raised at the end."""
        failure: BaseException | None = None
        output = []
        for _, _, callback in list(self._listeners.get(channel, ())):
            try:
                output.append(callback(*args))
            except Exception as err:
                if channel == "log":
                    continue
                failure = failure or err
                self.log(f"Error in {channel!r} listener {callback!r}", 40, traceback=True)
        if failure is not None:
            raise failure
        return output

    def log(self, msg: str = "", level: int = 20, traceback: bool = False) -> None:
        if traceback and sys.exc_info()[0] is not None:
            msg += "\n" + "".join(tb.format_exception(*sys.exc_info()))
        _LOG.log(level, msg)
        self.publish("log", msg, level)

    def start(self) -> None:
        self.state = _States.STARTING
        try:
            self.publish("start")
        except BaseException:
            self.log("Shutting down due to error in start listener:", 40, traceback=True)
            self.stop()
            self.state = _States.EXITING
            self._exited.set()
            raise
        self.state = _States.STARTED

    def stop(self) -> None:
        self.state = _States.STOPPING
        self.publish("stop")
        self.state = _States.STOPPED

    def exit(self) -> None:
        """Stop, then the exit channel; from any thread, once."""
        with self._exit_lock:
            if self._exited.is_set():
                return
            self.stop()
            self.state = _States.EXITING
            self.publish("exit")
            self._exited.set()

    def graceful(self) -> None:
        self.publish("graceful")

    def block(self) -> None:
        """Wait in the main thread until :meth:`exit` finished (signal handlers run here:
        the wait wakes at least every half second), then for non-daemon threads."""
        while not self._exited.wait(0.5):
            pass
        for thread in threading.enumerate():
            if thread is not threading.current_thread() and not thread.daemon:
                thread.join()
