"""The app of a description as a WSGI callable, for other WSGI servers (gunicorn, uWSGI,
Tornado's WSGIContainer, Twisted's WSGIResource...).

This is the "embedded" setup of CherryPy's deployment guide: the app is loaded exactly as
``cpsysd serve`` loads it (entry point, CherryPy config file, vhosts, ``tools.proxy`` with
``[nginx]``), CherryPy's own HTTP server is unsubscribed (the host server serves), the
autoreloader and CherryPy's signal handlers are off (the host server owns the process and its
signals), and ``cherrypy.engine`` is started, so plugins and tools that need it work.

Two ways in::

    gunicorn 'cpsysd.wsgi:load("/etc/cpsysd/hello.toml")'       # gunicorn calls the factory
    CPSYSD_CONFIG=/etc/cpsysd/hello.toml gunicorn cpsysd.wsgi:application

``application`` is loaded on first access (PEP 562 module ``__getattr__``), from the description
named by the ``CPSYSD_CONFIG`` environment variable. Load in the worker process, not before a
fork (no ``gunicorn --preload``): the engine's threads do not survive fork(2).
"""

from __future__ import annotations

import atexit
import os
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from cpsysd.errors import CpsysdError

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]
CONFIG_VARIABLE = "CPSYSD_CONFIG"

# CherryPy's "embedded" environment (cherrypy/_cpconfig.py), except log.screen: CherryPy's
# error log stays on stderr, which the host server keeps (gunicorn's --error-logfile, journald).
EMBEDDED_CONFIG: dict[str, Any] = {
    "engine.autoreload.on": False,
    "checker.on": False,
    "tools.log_headers.on": False,
    "request.show_tracebacks": False,
    "request.show_mismatched_params": False,
    "engine.SIGHUP": None,
    "engine.SIGTERM": None,
}
_lock = threading.Lock()
_loaded: dict[str, WSGIApp] = {}


def _start_engine() -> None:
    import cherrypy

    cherrypy.config.update(EMBEDDED_CONFIG)
    cherrypy.server.unsubscribe()  # no CherryPy HTTP server on 8080: the host server serves
    cherrypy.engine.autoreload.unsubscribe()  # it would re-exec the host server's process
    handler = getattr(cherrypy.engine, "signal_handler", None)
    if handler is not None:
        handler.unsubscribe()  # the host server handles SIGTERM/SIGHUP itself
    if cherrypy.engine.state != cherrypy.engine.states.STARTED:
        cherrypy.engine.start()
        atexit.register(cherrypy.engine.exit)


def load(path: str | os.PathLike[str]) -> WSGIApp:
    """Load the app described by ``path`` and return the WSGI callable that serves it.

    Loading the same description again returns the same callable. Raises CpsysdError.
    """
    from cpsysd.description.load import load_spec

    key = str(Path(path).resolve())
    with _lock:
        if key in _loaded:
            return _loaded[key]
        spec = load_spec(Path(path))
        import cherrypy

        from cpsysd.runtime.app import load_app
        from cpsysd.runtime.journal import AccessSink, use_journal

        load_app(spec, AccessSink(spec.name, to_journal=use_journal()))
        _start_engine()
        # cherrypy.tree dispatches to the app mounted (or grafted) at "" by load_app.
        app: WSGIApp = cherrypy.tree
        _loaded[key] = app
        return app


def __getattr__(name: str) -> Any:
    """``application``: the app of the description in ``$CPSYSD_CONFIG``, loaded on first use."""
    if name != "application":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    path = os.environ.get(CONFIG_VARIABLE)
    if not path:
        raise CpsysdError(
            f"{CONFIG_VARIABLE} is not set",
            f"set {CONFIG_VARIABLE}=/path/to/cpsysd.toml, or use cpsysd.wsgi:load(PATH)",
        )
    return load(path)
