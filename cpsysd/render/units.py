"""The unit files of one app: ``NAME.service`` and its sockets, or the worker template set, plus
the renewal timer. Pure: a description in, text out (the values are escaped in
:mod:`cpsysd.render.common`)."""

from __future__ import annotations

from cpsysd import escape
from cpsysd.description.load import AppSpec
from cpsysd.render.common import (
    MARKER,
    RenderOptions,
    comment_text,
    render_template,
    service_context,
    socket_unit_name,
)
from cpsysd.render.renew import render_renew_units, renew_unit_names
from cpsysd.render.workers import render_worker_units, target_name

__all__ = ["RenderOptions", "render_units", "units_to_enable"]


def render_service(spec: AppSpec, options: RenderOptions) -> str:
    return render_template("service.j2", **service_context(spec, options))


def render_socket(spec: AppSpec, options: RenderOptions, fd_name: str) -> str:
    listeners = [listener for listener in spec.listeners if listener.name == fd_name]
    return render_template(
        "socket.j2",
        marker=MARKER,
        source=comment_text(spec.source or options.description_path),
        description=escape.escape_specifiers(f"{spec.description} ({fd_name} socket)"),
        description_path=escape.file_url_path(options.description_path),
        addresses=[escape.escape_specifiers(listener.address) for listener in listeners],
        fd_name=fd_name,
        service=f"{spec.name}.service",
        tcp=any(not listener.is_unix for listener in listeners),
        unix=any(listener.is_unix for listener in listeners),
        reuse_port=False,
        wanted_by="sockets.target",
    )


def units_to_enable(spec: AppSpec) -> list[str]:
    """The units ``cpsysd install`` enables (and starts, with ``--now``): the sockets; the
    service starts on the first connection. With workers: ``NAME.target``, which wants every
    instance's sockets and service (cpsysd.render.workers)."""
    renew = renew_unit_names(spec)
    timers = [renew[0]] if renew else []  # NAME-cert-renew.timer, with [tls] renew_days
    if spec.workers > 1:
        return [target_name(spec), *timers]
    return [socket_unit_name(spec, fd_name) for fd_name in spec.fd_names] + timers


def render_units(spec: AppSpec, options: RenderOptions) -> dict[str, str]:
    """Every unit file for ``spec``: file name -> text, in a stable order. With ``workers > 1``
    the template set NAME@.service, NAME@.socket, NAME.target instead (cpsysd.render.workers)."""
    if spec.workers > 1:
        return render_worker_units(spec, options) | render_renew_units(spec, options)
    units = {f"{spec.name}.service": render_service(spec, options)}
    for fd_name in spec.fd_names:
        units[socket_unit_name(spec, fd_name)] = render_socket(spec, options, fd_name)
    units.update(render_renew_units(spec, options))  # NAME-cert-renew.{timer,service}
    return units
