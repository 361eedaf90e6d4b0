"""The health gate (``health_path``): READY=1 only after the app answered a health request.

The request is made in-process, through ``cherrypy.tree`` (which holds CherryPy roots and grafted
WSGI apps alike), not over a socket: under ``cpsysd deploy`` the listening socket is shared with
the release still serving (``Sockets=``), so a request sent to it could be answered by the old
release and prove nothing about this one.

:class:`HealthGatePlugin` runs on the engine's start channel at priority 70: after the app's own
start listeners (default 50: database pools and the like that a health handler may need) and
before the servers start accepting (75) and READY=1 (80). A release that fails the gate
therefore never accepts a connection from the shared socket.
"""

from __future__ import annotations

import io
import sys
import threading
from collections.abc import Callable, Iterable
from typing import Any

from cpsysd.runtime.bus import Plugin

HEALTH_TIMEOUT = 30.0  # seconds; systemd's TimeoutStartSec= (90 s) still bounds the whole start

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


class HealthGateFailed(BaseException):
    """The app failed its health request. A BaseException: CherryPy's ``bus.start()`` turns an
    Exception from a start listener into ``os._exit(70)`` after a traceback; this one passes
    through it, so ``cpsysd serve`` stops the engine and exits with one line instead."""


def _environ(path: str) -> dict[str, Any]:
    """A minimal WSGI environ (PEP 3333) for ``GET path`` from the loopback address."""
    path_info, _, query = path.partition("?")
    return {
        "REQUEST_METHOD": "GET",
        "SCRIPT_NAME": "",
        "PATH_INFO": path_info,
        "QUERY_STRING": query,
        "SERVER_NAME": "localhost",
        "SERVER_PORT": "80",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "HTTP_HOST": "localhost",
        "HTTP_USER_AGENT": "cpsysd-health-gate",
        "REMOTE_ADDR": "127.0.0.1",
        "REMOTE_PORT": "0",
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": "http",
        "wsgi.input": io.BytesIO(b""),
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": True,
        "wsgi.multiprocess": False,
        "wsgi.run_once": False,
    }


def ask_health(app: WSGIApp, path: str) -> str | None:
    """Call ``app`` with ``GET path``; None when it answered 2xx, else what went wrong."""
    seen: list[str] = []

    def start_response(status: str, headers: object, exc_info: object = None) -> None:
        seen.append(status)

    try:
        body = app(_environ(path), start_response)
        try:
            for _chunk in body:
                pass
        finally:
            close = getattr(body, "close", None)
            if close is not None:
                close()
    except Exception as err:  # the app's own failure is the gate's verdict, not a crash here
        return f"GET {path} raised {type(err).__name__}: {err}"
    if not seen:
        return f"GET {path} gave no response status"
    if not seen[-1].startswith("2"):
        return f"GET {path} answered {seen[-1]}"
    return None


def ask_health_within(app: WSGIApp, path: str, timeout: float = HEALTH_TIMEOUT) -> str | None:
    """:func:`ask_health` in a thread of its own, bounded by ``timeout`` seconds (a daemon
    thread: a hung handler must not keep the failing process alive)."""
    verdict: list[str | None] = []
    thread = threading.Thread(
        target=lambda: verdict.append(ask_health(app, path)), name="cpsysd-health", daemon=True
    )
    thread.start()
    thread.join(timeout)
    if not verdict:
        return f"GET {path} did not answer within {timeout:g} s"
    return verdict[0]


class HealthGatePlugin(Plugin):
    """Ask the app for ``path`` before the servers accept (see the module docstring)."""

    def __init__(self, bus: Any, app: WSGIApp, path: str) -> None:
        super().__init__(bus)
        self.app = app
        self.path = path

    def start(self) -> None:
        problem = ask_health_within(self.app, self.path)
        if problem is not None:
            raise HealthGateFailed(f"health gate failed: {problem}")
        self.bus.log(f"health gate passed: GET {self.path} answered 2xx")

    start.priority = 70  # type: ignore[attr-defined]
