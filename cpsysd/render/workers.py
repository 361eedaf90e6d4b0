"""Worker instances: N processes of one app as systemd template units (rolling restarts:
:mod:`cpsysd.host.restart`).

``workers = N`` renders ``NAME@.service`` and ``NAME@.socket`` (one ``NAME-FDNAME@.socket`` per
further socket name, as for a single service) and ``NAME.target``, which wants every instance and
which the instances are ``PartOf=`` (systemd.unit(5)), so ``systemctl start|stop|restart
NAME.target`` acts on all of them.

Instance names (``%i``, systemd.unit(5) "Specifiers"; computed in
:mod:`cpsysd.description.instances`, which
``cpsysd serve --instance`` shares):

* ``worker_mode = "reuseport"``: ``1`` .. ``N``. Every instance's socket binds the same addresses
  with ``ReusePort=yes`` (SO_REUSEPORT, socket(7)) and the kernel spreads new connections among
  them. A unix socket cannot be shared that way, so instance ``i`` of ``/run/app/app.sock``
  listens on ``/run/app/app-i.sock``.
* ``worker_mode = "ports"``: the port number. Instance ``8081`` listens on port 8081
  (``ListenStream=[HOST:]%i``), so instance ``i`` of ``listen = ["8080"]`` is ``NAME@808(i-1)``
  and ``systemctl start NAME@8090.socket`` adds one more. Every listener therefore needs the same
  port (they may differ in host).

"""

from __future__ import annotations

from pathlib import PurePosixPath

from cpsysd import escape
from cpsysd.description.instances import instance_listener, instance_names, instance_unix_path
from cpsysd.description.load import SUN_PATH_MAX, AppSpec, Listener, WorkerMode
from cpsysd.errors import SpecError
from cpsysd.render.common import (
    MARKER,
    RenderOptions,
    comment_text,
    render_template,
    service_context,
)

# instance_*: computed in cpsysd.description.instances (shared with cpsysd serve), kept here too
__all__ = [
    "instance_listener",
    "instance_names",
    "instance_unix_path",
    "render_instance_service",
    "render_instance_socket",
    "render_target",
    "render_worker_units",
    "service_template_name",
    "socket_template_name",
    "target_name",
]

_NOTE = {
    WorkerMode.REUSEPORT: "Worker instances {first}..{last} share one address (ReusePort=yes).",
    WorkerMode.PORTS: "Worker instances are named by their port: {first}..{last}.",
}


def target_name(spec: AppSpec) -> str:
    """``NAME.target``: starts, stops and restarts every instance together."""
    return f"{spec.name}.target"


def socket_template_name(spec: AppSpec, fd_name: str, instance: str = "") -> str:
    """``NAME@.socket`` for the first socket name, ``NAME-FDNAME@.socket`` for the others; with
    ``instance`` the instance's unit name instead of the template's."""
    stem = spec.name if fd_name == spec.fd_names[0] else f"{spec.name}-{fd_name}"
    return f"{stem}@{instance}.socket"


def service_template_name(spec: AppSpec, instance: str = "") -> str:
    """``NAME@.service``, or the instance ``NAME@INSTANCE.service``."""
    return f"{spec.name}@{instance}.service"


def _socket_address(spec: AppSpec, listener: Listener) -> str:
    """The ``ListenStream=`` value with ``%i`` where the instance goes (escaped elsewhere)."""
    if listener.path is not None:
        longest = instance_unix_path(listener.path, str(spec.workers))
        if len(longest.encode()) > SUN_PATH_MAX:
            raise SpecError(
                "listen",
                f"{listener.path} with an instance number is longer than {SUN_PATH_MAX} bytes",
                "use a shorter path, e.g. under /run",
            )
        pure = PurePosixPath(listener.path)
        directory = escape.escape_specifiers(str(pure.parent)).rstrip("/")
        stem, suffix = (escape.escape_specifiers(part) for part in (pure.stem, pure.suffix))
        return f"{directory}/{stem}-%i{suffix}"
    if spec.worker_mode is WorkerMode.PORTS:
        if listener.host is None:
            return "%i"
        return f"[{listener.host}]:%i" if ":" in listener.host else f"{listener.host}:%i"
    return escape.escape_specifiers(listener.address)


def _common_context(spec: AppSpec, options: RenderOptions) -> dict[str, object]:
    names = instance_names(spec)
    return {
        "marker": MARKER,
        "source": comment_text(spec.source or options.description_path),
        "description_path": escape.file_url_path(options.description_path),
        "target": target_name(spec),
        "instance_note": _NOTE[spec.worker_mode].format(first=names[0], last=names[-1]),
    }


def render_instance_socket(spec: AppSpec, options: RenderOptions, fd_name: str) -> str:
    """The template socket unit of socket name ``fd_name``."""
    listeners = [listener for listener in spec.listeners if listener.name == fd_name]
    tcp = any(not listener.is_unix for listener in listeners)
    return render_template(
        "instance@.socket.j2",
        **_common_context(spec, options),
        description=escape.escape_specifiers(spec.description),
        addresses=[_socket_address(spec, listener) for listener in listeners],
        fd_name=fd_name,
        service=service_template_name(spec, "%i"),
        tcp=tcp,
        unix=any(listener.is_unix for listener in listeners),
        reuse_port=tcp and spec.worker_mode is WorkerMode.REUSEPORT,
    )


def render_instance_service(
    spec: AppSpec, options: RenderOptions, description_suffix: str = "", **release: object
) -> str:
    """The template service unit: :func:`cpsysd.render.units.service_context` (the same sandbox as a
    single service), with the instance's sockets and ``PartOf=NAME.target``. ``release``
    overrides context values for a release's template (:mod:`cpsysd.render.releases`)."""
    context = service_context(spec, options)
    context.update(_common_context(spec, options))
    context["sockets"] = [socket_template_name(spec, fd, "%i") for fd in spec.fd_names]
    context["description"] = f"{context['description']}{description_suffix}"
    context.update(release)
    return render_template("instance@.service.j2", **context)


def render_target(spec: AppSpec, options: RenderOptions) -> str:
    """``NAME.target``: wants every instance's sockets and service."""
    members = []
    for instance in instance_names(spec):
        members += [socket_template_name(spec, fd, instance) for fd in spec.fd_names]
        members.append(service_template_name(spec, instance))
    return render_template(
        "target.j2",
        **_common_context(spec, options),
        description=escape.escape_specifiers(spec.description),
        count=spec.workers,
        members=members,
        wanted_by="default.target" if options.user_mode else "multi-user.target",
    )


def render_worker_units(spec: AppSpec, options: RenderOptions) -> dict[str, str]:
    """Every unit of a multi-worker app: file name -> text (what render_units returns for it)."""
    units = {service_template_name(spec): render_instance_service(spec, options)}
    for fd_name in spec.fd_names:
        units[socket_template_name(spec, fd_name)] = render_instance_socket(spec, options, fd_name)
    units[target_name(spec)] = render_target(spec, options)
    return units
