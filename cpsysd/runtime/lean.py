"""A ``kind = "wsgi"`` app served on cheroot alone, without importing CherryPy.

CherryPy's import is most of a cold start (``python -X importtime``: about 60-80 ms of 120), and
a WSGI app uses none of it: the servers are cheroot's, the lifecycle is the
:class:`~cpsysd.runtime.bus.LeanBus` with the same plugins. What would need CherryPy keeps the
CherryPy path: a CherryPy config file (its ``server.*`` and ``log.*`` settings are read with
CherryPy's parser), ``kind = "auto"`` (telling a root from a WSGI callable takes CherryPy's
types), and the host options ``--user``, ``--group``, ``--daemon`` and ``--pidfile`` (CherryPy's
own plugins).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from cpsysd.description.load import AppSpec, Kind
from cpsysd.errors import CpsysdError
from cpsysd.records import record
from cpsysd.runtime.entry import import_entry
from cpsysd.runtime.journal import AccessSink, wsgi_with_access_log


def lean_possible(spec: AppSpec, host_options: bool) -> bool:
    """Whether this app can be served without importing CherryPy (see the module docstring)."""
    return spec.kind is Kind.WSGI and not spec.config and not spec.vhosts and not host_options


@record(frozen=False)
class LeanApp:
    """What :func:`load_wsgi_app` serves: ``wsgi`` is the entry wrapped with the access log.
    The same face as :class:`cpsysd.runtime.app.ServedApp` towards the plugins."""

    spec: AppSpec
    kind: Kind
    mounted: Any
    wsgi: Callable[..., Any]
    log_screen: bool = True

    def reload(self) -> None:
        """SIGHUP: there is no CherryPy config file to re-read (TLS files are the Reloader's)."""


def load_wsgi_app(spec: AppSpec, sink: AccessSink) -> LeanApp:
    """Import the entry from the working directory; it must be a WSGI callable."""
    os.chdir(spec.working_directory)  # as WorkingDirectory= in the service: same relative paths
    obj = import_entry(spec)
    if not callable(obj):
        raise CpsysdError(f"{spec.entry} is not callable, so it is no WSGI application")
    return LeanApp(spec, Kind.WSGI, obj, wsgi_with_access_log(obj, sink))


def bus_logger(bus: Any) -> Callable[..., None]:
    """``cherrypy.log(msg, context, severity)`` on the lean bus: one line with the context."""

    def log(msg: str, context: str = "", severity: int = 20, traceback: bool = False) -> None:
        bus.log(f"{context}: {msg}" if context else msg, severity, traceback)

    return log
