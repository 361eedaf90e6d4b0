"""``cpsysd serve``: serve the described app on the sockets systemd passed, or bind them itself.

argparse, not Typer: this is every socket-activated service's cold start. Order matters: the
socket-activation environment is checked before the (possibly slow) app import, so a bad
environment fails at once; the app is imported before any thread is started (``--daemon`` forks).
"""

from __future__ import annotations

import os
import signal
import sys
import traceback
from collections.abc import Callable
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

from cpsysd.description.load import AppSpec, WorkerMode, load_spec
from cpsysd.description.model import AcmeChallenge
from cpsysd.errors import ERROR_PREFIX, CpsysdError
from cpsysd.runtime import notify
from cpsysd.runtime.adopt import activation_requested, adopt_sockets
from cpsysd.runtime.listeners import Binding, bind_listeners, close_bindings, match_passed_sockets

if TYPE_CHECKING:
    import argparse


def build_parser() -> argparse.ArgumentParser:
    import argparse  # only for --help and the unusual forms: about 1.5 ms of every start

    parser = argparse.ArgumentParser(
        prog="cpsysd serve",
        description="Serve a CherryPy or WSGI app on the sockets systemd passes in (or bind the "
        "described listeners when started without socket activation), speaking sd_notify.",
    )
    parser.add_argument(
        "-c",
        "--config",
        metavar="FILE",
        default="cpsysd.toml",
        help="the app description (cpsysd.toml or a pyproject.toml); default %(default)s",
    )
    parser.add_argument(
        "--daemon",
        action="store_true",
        help="detach into the background (hosts without systemd; refused under systemd)",
    )
    parser.add_argument(
        "--pidfile", metavar="FILE", help="write the PID here (hosts without systemd)"
    )
    parser.add_argument(
        "--instance",
        metavar="I",
        help="with workers = N and no socket activation: bind worker instance I's listeners, as "
        "systemd's NAME@I units would (1..N, or the port with worker_mode = ports)",
    )
    parser.add_argument("--user", help="drop privileges to this user after binding (needs root)")
    parser.add_argument("--group", help="drop privileges to this group after binding (needs root)")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    return parser


# The argv forms read without argparse: building the parser costs about 0.7 ms of every start
# (its help formatter compiles regexes). Anything else (--help, a mistake, an abbreviation,
# --option=value, a value starting with '-') goes to argparse, whose result and messages rule.
_FLAGS = {"--daemon": "daemon", "--debug": "debug"}
_OPTIONS = {
    "-c": "config",
    "--config": "config",
    "--pidfile": "pidfile",
    "--user": "user",
    "--group": "group",
    "--instance": "instance",
}


def parse_serve_args(argv: list[str]) -> SimpleNamespace:
    """``build_parser().parse_args(argv)``, without building the parser for the usual forms."""
    values: dict[str, object] = {"config": "cpsysd.toml", "daemon": False, "debug": False}
    values.update(pidfile=None, instance=None, user=None, group=None)
    rest = iter(argv)
    for arg in rest:
        if arg in _FLAGS:
            values[_FLAGS[arg]] = True
        elif arg in _OPTIONS and not (value := next(rest, "-")).startswith("-"):
            values[_OPTIONS[arg]] = value
        else:
            return SimpleNamespace(**vars(build_parser().parse_args(argv)))
    return SimpleNamespace(**values)


def _supervised_by_systemd() -> str | None:
    for var in ("NOTIFY_SOCKET", "INVOCATION_ID"):
        if var in os.environ:
            return var
    return None


def _check_options(args: SimpleNamespace) -> None:
    if args.pidfile:
        args.pidfile = os.path.abspath(args.pidfile)  # before the chdir to working_directory
    if args.daemon:
        var = _supervised_by_systemd()
        if var is not None:
            raise CpsysdError(
                f"--daemon refused: systemd supervises this process ({var} is set); a daemon "
                "that forks away would be seen as exited and its sockets and notifications lost",
                "drop --daemon; systemd already runs the app in the background",
            )
    if args.instance is not None and activation_requested():
        raise CpsysdError(
            f"--instance {args.instance!r} refused: under socket activation the sockets systemd "
            "passes decide where an instance listens",
            "drop --instance; systemd's NAME@I units pass each instance its sockets",
        )
    if (args.user or args.group) and os.geteuid() != 0:
        raise CpsysdError(
            "--user/--group need root to switch users", "start as root, or leave them out"
        )


def acquire_listeners(spec: AppSpec, instance: str | None = None) -> list[Binding]:
    """The sockets systemd passed, matched to the description, or the listeners bound here:
    with ``instance`` (checked, :func:`cpsysd.description.instances.check_instance`) that worker
    instance's, exactly where systemd's ``NAME@INSTANCE.socket`` would listen."""
    if activation_requested():
        passed = adopt_sockets()
        assert passed is not None
        try:
            return match_passed_sockets(passed, spec.listeners)
        except CpsysdError:
            for item in passed:
                item.sock.detach()  # refused: leave systemd's descriptors alone
            raise
    if instance is None:
        return bind_listeners(spec.listeners)
    from cpsysd.description.instances import instance_listener  # only supervisord's workers need it

    listeners = [instance_listener(spec, listener, instance) for listener in spec.listeners]
    return bind_listeners(listeners, reuse_port=spec.worker_mode is WorkerMode.REUSEPORT)


def _host_plugins(args: SimpleNamespace, engine: object) -> list[object]:
    """CherryPy's own plugins for hosts without systemd (the deployment guide's recipes)."""
    from cherrypy.process import plugins

    found: list[object] = []
    if args.user or args.group:
        try:
            found.append(plugins.DropPrivileges(engine, uid=args.user, gid=args.group))
        except KeyError as err:
            raise CpsysdError(
                f"no such user or group: {err.args[0] if err.args else err}"
            ) from None
    if args.daemon:
        found.append(plugins.Daemonizer(engine))
    if args.pidfile:
        found.append(plugins.PIDFile(engine, args.pidfile))
    return found


class Terminated(BaseException):
    """SIGTERM before the engine runs (e.g. a stop during a slow import): exit 0 at once.
    A BaseException, so the app's or the importer's ``except Exception`` does not swallow it."""


_EARLY_SIGNALS: set[str] = set()  # signals held before the engine's handlers are installed


def _terminate_early(signum: int, frame: object) -> None:
    raise Terminated


def _reload_later(signum: int, frame: object) -> None:
    _EARLY_SIGNALS.add("reload")  # the default action would kill the process


def _serve(args: SimpleNamespace) -> int:
    signal.signal(signal.SIGTERM, _terminate_early)
    signal.signal(signal.SIGHUP, _reload_later)
    _check_options(args)
    spec = load_spec(args.config)
    if args.instance is not None:
        from cpsysd.description.instances import check_instance

        check_instance(spec, args.instance)
        os.environ["CPSYSD_INSTANCE"] = args.instance  # as the systemd instance units set it
    if spec.state_directory:  # as StateDirectory= would, before the app's import reads it
        from cpsysd.runtime.state import provide_state_directory

        provide_state_directory(spec, args.user, args.group)
    bindings = acquire_listeners(spec, args.instance)
    try:
        return _run(args, spec, bindings)
    finally:
        close_bindings(bindings)


def _run(args: SimpleNamespace, spec: AppSpec, bindings: list[Binding]) -> int:
    from cpsysd.runtime import adapter, journal, lean, plugins, server

    host_options = bool(args.user or args.group or args.daemon or args.pidfile)
    sink = journal.AccessSink(spec.name, journal.use_journal())
    with notify.StartupExtender(f"Importing {spec.entry}"):
        if lean.lean_possible(spec, host_options):
            from cpsysd.runtime.bus import LeanBus

            served: Any = lean.load_wsgi_app(spec, sink)
            engine: Any = LeanBus()
            wsgi_app, log = served.wsgi, lean.bus_logger(engine)
            settings, version = dict(server.CHERRYPY_DEFAULTS), None
        else:
            import cherrypy  # the slow part of the start, with the app import

            from cpsysd.runtime import app as app_module

            served = app_module.load_app(spec, sink)
            engine, wsgi_app, log = cherrypy.engine, cherrypy.tree, cherrypy.log
            settings, version = app_module.server_settings(), app_module.SERVER_VERSION
            _quiet_cherrypy_defaults(engine, bindings)
    journal.configure_logging(sink, served.log_screen)
    connections = _idle_stop_connections(spec, bindings, log)

    def make(binding: Binding, ssl_adapter: Any, open_connections: Any) -> Any:
        return adapter.ListenerServer(
            engine, binding, settings, wsgi_app, ssl_adapter, open_connections, version
        )

    servers = _make_servers(spec, bindings, make, connections)
    host_plugins = _host_plugins(args, engine) if host_options else []
    status_text = plugins.serving_status(spec.name, servers)
    for item in servers:
        item.subscribe()
    renewal = _renewal_status(spec, engine, status_text)
    notifier = plugins.NotifyPlugin(engine, status_text, renewal)
    notifier.subscribe()
    if connections is not None:
        plugins.IdleStopPlugin(engine, connections, spec.idle_stop_sec, notifier).subscribe()
    plugins.GracefulStopPlugin(engine, servers, spec.timeout_stop_sec).subscribe()
    if spec.health_path is not None:
        from cpsysd.runtime import health

        health.HealthGatePlugin(engine, wsgi_app, spec.health_path).subscribe()
    _subscribe_watchdog(engine, servers, status_text, log)
    for plugin in host_plugins:
        plugin.subscribe()  # type: ignore[attr-defined]
    reloader = plugins.Reloader(engine, served, sink, servers, status_text, log, renewal)
    signals = plugins.Signals(engine, reloader, _EARLY_SIGNALS)
    signals.install()
    _start_engine(engine)
    signals.started()
    engine.block()
    return 0


def _renewal_status(spec: AppSpec, engine: Any, status_text: str) -> Any:
    """The plugin that shows a failing ACME renewal in STATUS=; None without ACME."""
    if spec.acme_failure_path is None:
        return None
    from cpsysd.runtime.renewal import RenewalStatus

    renewal = RenewalStatus(engine, spec.acme_failure_path, status_text)
    renewal.subscribe()
    return renewal


def _start_engine(engine: Any) -> None:
    """``engine.start()``; a failed health gate stops what started (the servers never
    accepted) and becomes the one-line error of :func:`serve_main`."""
    from cpsysd.runtime.health import HealthGateFailed

    try:
        engine.start()
    except HealthGateFailed as failed:
        engine.stop()  # out of STARTING first: exit() from there would os._exit(70)
        engine.exit()
        raise CpsysdError(
            str(failed), "make the app answer health_path with 2xx, or correct health_path"
        ) from None


def _quiet_cherrypy_defaults(engine: Any, bindings: list[Binding]) -> None:
    """Unsubscribe what CherryPy starts by default and cpsysd replaces."""
    import cherrypy

    if any(binding.adopted for binding in bindings):
        # Autoreload re-executes the process, and the sockets systemd passed are close-on-exec
        # (sd_listen_fds(3)): they would be gone. `systemctl restart` picks up new code.
        if cherrypy.config.get("engine.autoreload.on"):
            cherrypy.log("engine.autoreload.on is ignored under socket activation", "CPSYSD")
        engine.autoreload.unsubscribe()
    cherrypy.server.unsubscribe()  # it would bind 127.0.0.1:8080 on its own
    for extra in getattr(cherrypy, "servers", {}).values():
        extra.unsubscribe()  # server.NAME.* config: cpsysd serves only the described listeners


def _idle_stop_connections(spec: AppSpec, bindings: list[Binding], log: Callable[..., Any]) -> Any:
    """The connection count ``idle_stop_sec`` watches, or None when it is off. Only with the
    sockets systemd passed: an app that bound its own would exit for good, as nothing would
    start it again."""
    from cpsysd.runtime import server

    if not spec.idle_stop_sec:
        return None
    if not all(binding.adopted for binding in bindings):
        log("idle_stop_sec is ignored without socket activation", "CPSYSD")
        return None
    return server.OpenConnections()


def _make_servers(
    spec: AppSpec, bindings: list[Binding], make: Callable[..., Any], connections: Any = None
) -> list[Any]:
    """One server per binding: ``make(binding, ssl_adapter, open_connections)``."""
    servers = [
        make(binding, _tls_adapter(spec) if binding.tls else None, connections)
        for binding in bindings
    ]
    challenges = spec.acme_challenge_dir
    if challenges is not None and not _alpn_challenges(spec):
        from cpsysd.runtime import acme

        # http-01 is asked over plain HTTP only (RFC 8555 section 8.3).
        for item in servers:
            if not item.binding.tls:
                item.httpserver.wsgi_app = acme.with_challenges(
                    item.httpserver.wsgi_app, challenges
                )
    return servers


def _tls_adapter(spec: AppSpec) -> Any:
    from cpsysd.runtime import tls  # cheroot's ssl adapter: only for TLS listeners

    return tls.make_adapter(spec.tls, spec.acme_challenge_dir if _alpn_challenges(spec) else None)


def _alpn_challenges(spec: AppSpec) -> bool:
    """tls-alpn-01 is asked on the TLS listeners (RFC 8737), http-01 on the plain ones."""
    return spec.tls is not None and spec.tls.acme_challenge is AcmeChallenge.TLS_ALPN_01


def _subscribe_watchdog(
    engine: Any, servers: list[Any], status_text: str, log: Callable[..., Any]
) -> None:
    from cpsysd.runtime import plugins, watchdog

    period = watchdog.watchdog_period()
    if period is None:
        return
    probes = [item.httpserver.probe for item in servers]
    dog = watchdog.Watchdog(period, probes, lambda message: log(message, "WATCHDOG"))
    dog.status_when_healthy = status_text
    plugins.WatchdogPlugin(engine, dog).subscribe()


def serve_main(argv: list[str], debug: bool = False) -> int:
    """Run ``cpsysd serve ARGV``; returns the exit code. Errors are one line on stderr (a
    traceback only with ``debug``) and the last ``STATUS=`` systemd shows."""
    args = parse_serve_args(argv)
    debug = debug or args.debug
    try:
        return _serve(args)
    except CpsysdError as err:
        _report(err.one_line(), debug)
        return err.exit_code
    except Terminated:
        print("cpsysd: stopped (SIGTERM) before serving", file=sys.stderr)
        return 0
    except KeyboardInterrupt:
        return 130
    except Exception as err:  # a bug, or something the checks did not foresee
        _report(f"unexpected {type(err).__name__}: {err}", debug)
        return 1


def _report(message: str, debug: bool) -> None:
    if debug:
        traceback.print_exc()
    print(f"{ERROR_PREFIX}{message}", file=sys.stderr)
    notify.failed(message)
