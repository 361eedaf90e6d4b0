"""The units of releases (``cpsysd deploy``, :mod:`cpsysd.host.deploy`). Pure: text only.

A release ``ID`` of app ``NAME`` runs as ``NAME-release@ID.service``, an instance of one template
whose paths hold the instance (``%i``, systemd.unit(5) "Specifiers"): it runs
``RELEASES/NAME/ID/venv/bin/python -m cpsysd serve -c RELEASES/NAME/ID/cpsysd.toml`` from
``RELEASES/NAME/ID/app``. ``Sockets=NAME.socket`` (systemd.service(5)) passes it the listening
sockets ``cpsysd install`` made, so two releases accept on the one listening socket at once while
they swap, and no connection waits in a queue that closes (FINDINGS.md: SO_REUSEPORT groups drop
the queue of the listener that closes; one shared socket does not).

A drop-in ``NAME.socket.d/cpsysd-release.conf`` sets the socket's ``Service=`` to the live
release, so that a connection arriving while nothing runs (after an idle stop, say) starts the
live release, not ``NAME.service`` with the code in ``working_directory``.

Not for ``workers > 1`` (yet): their instances are ``NAME@I.service`` with a socket each.
"""

from __future__ import annotations

from pathlib import PurePosixPath

from cpsysd import escape
from cpsysd.description.model import AppSpec
from cpsysd.render.common import (
    MARKER,
    RenderOptions,
    render_template,
    service_context,
    socket_unit_name,
)

RELEASES_DIR = PurePosixPath("/var/lib/cpsysd/releases")
DROPIN_NAME = "cpsysd-release.conf"
RELEASE_DESCRIPTION = "cpsysd.toml"  # in each release's directory


def release_template_name(spec: AppSpec) -> str:
    """``NAME-release@.service``."""
    return f"{spec.name}-release@.service"


def release_unit(name: str, release_id: str) -> str:
    """``NAME-release@ID.service``, the unit of one release."""
    return f"{name}-release@{release_id}.service"


def app_releases_dir(name: str, releases_dir: PurePosixPath = RELEASES_DIR) -> PurePosixPath:
    """``RELEASES/NAME``: every release of ``name``, one directory each."""
    return releases_dir / name


def render_release_service(spec: AppSpec, releases_dir: PurePosixPath = RELEASES_DIR) -> str:
    """The template ``NAME-release@.service``: the app's own service (the same sandbox and
    settings) with its paths in the release's directory and the app's sockets shared."""
    # Escaped before "%i" is appended, so only that one is a specifier.
    root = escape.escape_specifiers(str(app_releases_dir(spec.name, releases_dir)))
    if any(ch.isspace() or ch in "\"'\\;" for ch in root):
        raise ValueError(f"{root!r}: a releases directory needs a plain path")
    description = f"{root}/%i/{RELEASE_DESCRIPTION}"
    context = service_context(spec, RenderOptions(description_path=description))
    # unit_stem stays NAME: the journal's SyslogIdentifier= and StateDirectory= are the app's,
    # shared by its releases.
    context.update(
        description=f"{context['description']} (release %i)",
        description_path=description,
        exec_start=f"{root}/%i/venv/bin/python -m cpsysd serve -c {description}",
        working_directory=f"{root}/%i/app",
        shared_sockets=context["sockets"],
    )
    return render_template("service.j2", **context)


def socket_dropins(spec: AppSpec) -> list[str]:
    """The drop-in paths (relative to the unit directory) that point each socket at the live
    release: ``NAME.socket.d/cpsysd-release.conf``, one per socket unit."""
    return [f"{socket_unit_name(spec, fd)}.d/{DROPIN_NAME}" for fd in spec.fd_names]


def render_socket_dropin(spec: AppSpec, release_id: str) -> str:
    """A socket's drop-in: ``Service=`` the live release (see the module docstring)."""
    return (
        f"# {MARKER}\n"
        "# cpsysd deploy points the socket at the live release; cpsysd rollback too.\n"
        f"[Socket]\nService={release_unit(spec.name, release_id)}\n"
    )
