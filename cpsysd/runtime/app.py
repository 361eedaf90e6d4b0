"""Load the app of the description and its CherryPy config into ``cherrypy.tree``.

The entry ``module:attribute`` is imported from ``spec.working_directory``. ``kind = "auto"``
decides: a :class:`cherrypy.Application` is mounted as it is; a class is a CherryPy root class
(instantiated without arguments); an object with exposed handlers is a CherryPy root; any other
callable is a WSGI application (grafted, with cpsysd's access log around it).

The CherryPy config file (``spec.config``) is applied as ``cherrypy.quickstart`` does: its
[global] section to ``cherrypy.config``, the rest to the app; :func:`reload_config` re-reads it on
SIGHUP. Settings derived from the description come first, so the file can still override them:
``spec.vhosts`` becomes a virtual-host dispatcher (:mod:`cpsysd.runtime.vhosts`: CherryPy's
VirtualHost with nginx's host matching, wildcards included), ``spec.nginx`` turns on
``tools.proxy`` so the app sees the client address and host nginx forwards.
"""

from __future__ import annotations

import logging
import os
from dataclasses import field
from typing import Any

import cherrypy
from cherrypy import _cpconfig, _cplogging
from cherrypy._cpwsgi_server import CPWSGIServer
from cherrypy.lib import reprconf

from cpsysd.description.load import AppSpec, Kind
from cpsysd.errors import CpsysdError
from cpsysd.records import record
from cpsysd.runtime.entry import import_entry
from cpsysd.runtime.journal import AccessSink, wsgi_with_access_log

# Global settings before the app's own: autoreload re-executes the process, which would lose
# the sockets systemd passed (they are close-on-exec) and confuse the service manager.
BASE_GLOBAL_CONFIG: dict[str, Any] = {"engine.autoreload.on": False}
_IGNORED_SERVER_KEYS = ("server.socket_host", "server.socket_port", "server.socket_file")
SERVER_VERSION: str = CPWSGIServer.version  # "CherryPy/x Cheroot/y", as CherryPy's server says


@record(frozen=False)
class ServedApp:
    """What :func:`load_app` mounted: the kind, the object in ``cherrypy.tree`` and the
    description-derived config merged before the file's (kept for reloads)."""

    spec: AppSpec
    kind: Kind
    mounted: Any
    derived_config: dict[str, dict[str, Any]] = field(default_factory=dict)
    # [global] log.screen as written in the file. Not taken from cherrypy.config, where
    # environment = "production" also turns it off: under systemd the screen is the journal.
    log_screen: bool = True

    def reload(self) -> None:
        """SIGHUP: :func:`reload_config`."""
        reload_config(self)

    @property
    def application(self) -> cherrypy.Application | None:
        return self.mounted if isinstance(self.mounted, cherrypy.Application) else None


def _exposed(value: object) -> bool:
    return bool(getattr(value, "exposed", False))


def looks_like_cherrypy_root(obj: object) -> bool:
    """An object CherryPy's dispatcher can serve: exposed itself or having exposed handlers."""
    if _exposed(obj) or hasattr(obj, "_cp_dispatch") or hasattr(obj, "_cp_config"):
        return True
    candidates = [
        getattr(type(obj), name, None) for name in dir(type(obj)) if not name.startswith("__")
    ]
    candidates += list(getattr(obj, "__dict__", {}).values())
    return any(_exposed(value) for value in candidates)


def detect_kind(obj: object, declared: Kind) -> Kind:
    """The kind to serve ``obj`` as (see the module docstring)."""
    if declared is not Kind.AUTO:
        return declared
    if isinstance(obj, cherrypy.Application | type) or looks_like_cherrypy_root(obj):
        return Kind.CHERRYPY
    if callable(obj):
        return Kind.WSGI
    raise CpsysdError(
        f"{type(obj).__name__} object is neither a CherryPy root nor a WSGI callable",
        'set kind = "cherrypy" or "wsgi" in the description, or point entry at the right object',
    )


def derived_config(spec: AppSpec) -> dict[str, dict[str, Any]]:
    """App config from the description: VirtualHost dispatch and tools.proxy."""
    root: dict[str, Any] = {}
    if spec.vhosts:
        from cpsysd.runtime.vhosts import vhost_dispatcher

        root["request.dispatch"] = vhost_dispatcher(
            spec.vhosts, trust_forwarded_host=spec.nginx is not None
        )
    if spec.nginx is not None:
        root["tools.proxy.on"] = True
    return {"/": root} if root else {}


def read_config_file(path: str) -> dict[str, Any]:
    """Parse a CherryPy config file; CpsysdError naming the file on any problem."""
    try:
        parsed: dict[str, Any] = reprconf.Parser().dict_from_file(path)
    except OSError as err:
        raise CpsysdError(
            f"cannot read the CherryPy config {path}: {err.strerror or err}"
        ) from None
    except Exception as err:  # reprconf evaluates values as Python literals
        raise CpsysdError(f"invalid CherryPy config {path}: {err}") from None
    return parsed


def screen_wanted(parsed: dict[str, Any] | None) -> bool:
    """Whether the file's [global] section leaves console (journal) logging on."""
    return bool((parsed or {}).get("global", {}).get("log.screen", True))


def apply_global_config(spec: AppSpec, parsed: dict[str, Any] | None) -> None:
    """Reset ``cherrypy.config`` and apply cpsysd's base settings, then the file's [global]."""
    cherrypy.config.reset()
    cherrypy.config.update(dict(BASE_GLOBAL_CONFIG))
    if parsed is not None:
        cherrypy.config.update({"global": dict(parsed.get("global", {}))})
    for key in _IGNORED_SERVER_KEYS:
        if key in cherrypy.config:
            cherrypy.log(
                f"{key} in {spec.config} is ignored: cpsysd listens where 'listen' "
                "in the description says",
                "CPSYSD",
            )


def _instantiate(obj: object, spec: AppSpec) -> object:
    if not isinstance(obj, type):
        return obj
    try:
        return obj()
    except Exception as err:
        raise CpsysdError(
            f"creating the root object {spec.entry}() failed: {type(err).__name__}: {err}"
        ) from err


def _merge_app_config(
    app: cherrypy.Application, derived: dict[str, Any], parsed: dict[str, Any] | None
) -> None:
    """Build the complete app config first, then swap it in: requests running during a reload
    see either the old or the new config, never half of each."""
    config: dict[str, Any] = type(app).config.copy()
    _cpconfig.merge(config, {section: dict(values) for section, values in derived.items()})
    if parsed:
        _cpconfig.merge(
            config,
            {section: dict(values) for section, values in parsed.items() if section != "global"},
        )
    app.config = config
    app.namespaces(config.get("/", {}))


def load_app(spec: AppSpec, sink: AccessSink) -> ServedApp:
    """Import the entry point, apply the configs and mount it at ``/`` in ``cherrypy.tree``."""
    parsed = read_config_file(spec.config) if spec.config else None
    apply_global_config(spec, parsed)
    os.chdir(spec.working_directory)  # as WorkingDirectory= in the service: same relative paths
    obj = import_entry(spec)
    kind = detect_kind(obj, spec.kind)
    derived = derived_config(spec)
    if kind is Kind.WSGI:
        if spec.vhosts:
            raise CpsysdError(
                "vhosts need a CherryPy app, but the entry is a WSGI callable",
                "remove vhosts, or route domains in the WSGI app",
            )
        if not callable(obj):
            raise CpsysdError(f"{spec.entry} is not callable, so it is no WSGI application")
        cherrypy.tree.graft(wsgi_with_access_log(obj, sink), "")
        return ServedApp(spec, kind, obj, log_screen=screen_wanted(parsed))
    root = _instantiate(obj, spec)
    app = root if isinstance(root, cherrypy.Application) else cherrypy.Application(root, "")
    _merge_app_config(app, derived, parsed)
    cherrypy.tree.mount(app)
    install_access_log(app, sink)
    return ServedApp(spec, kind, app, derived, screen_wanted(parsed))


def server_settings() -> dict[str, Any]:
    """The listeners' server settings (``server.TUNABLES``): what the app's config put on
    ``cherrypy.server``, cpsysd's ``server.DEFAULTS`` where it set nothing."""
    from cpsysd.runtime.server import DEFAULTS, TUNABLES

    return {
        name: getattr(cherrypy.server, name)
        if f"server.{name}" in cherrypy.config or name not in DEFAULTS
        else DEFAULTS[name]
        for name in TUNABLES
    }


def reload_config(served: ServedApp) -> None:
    """SIGHUP: re-read the CherryPy config file; on any error the running config stays."""
    spec = served.spec
    if not spec.config:
        return
    parsed = read_config_file(spec.config)  # raises before anything changes
    apply_global_config(spec, parsed)
    served.log_screen = screen_wanted(parsed)
    app = served.application
    if app is not None:
        _merge_app_config(app, served.derived_config, parsed)


class AppLogManager(_cplogging.LogManager):  # type: ignore[misc]
    """An app's CherryPy log manager whose access() goes to the :class:`AccessSink`."""

    sink: AccessSink | None = None

    def access(self) -> None:
        if self._get_builtin_handler(self.access_log, "file"):  # the app set log.access_file
            super().access()
        sink = self.sink
        if sink is not None and sink.enabled:
            try:
                sink.emit(cherrypy.serving.request, cherrypy.serving.response)
            except Exception:  # a log write must never turn a response into an error
                self.error(
                    "cannot write the access log entry", "ACCESS", logging.WARNING, traceback=True
                )


def install_access_log(app: Any, sink: AccessSink) -> None:
    """Give a mounted :class:`cherrypy.Application` the fast access log. Its loggers (and any
    file handlers its config added) stay the same: they live on the logging.Logger objects."""
    manager = AppLogManager(app.log.appid, app.log.logger_root)
    manager.sink = sink
    app.log = manager
