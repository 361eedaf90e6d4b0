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

With ``workers = N`` each instance ``I`` has its own socket ``NAME@I.socket`` (ReusePort=), so a
release cannot be one instance of one template: release ``ID`` gets a template of its own,
``NAME-release-ID@.service``, whose instance ``I`` shares ``NAME@I.socket``, and the drop-in
``NAME@I.socket.d/cpsysd-release.conf`` points each instance's socket at its live release. The
deploy swaps instance by instance, so every socket keeps listening and at most one instance is
between releases at a time.

What systemd starts by itself must be the live release too (:func:`render_boot_dropins`): boot and
``systemctl start|restart NAME.target`` start what the target wants, and ``NAME.target`` (which
``cpsysd install`` wrote, and which cpsysd leaves as written) wants ``NAME@I.service``. A
dependency cannot be taken back in a drop-in (systemd.unit(5): they can only be added), so once a
release is live a drop-in on the units of ``cpsysd install`` makes them skip every start (a
failing condition is not an error to what wants them), and a drop-in on the target wants the live
release's instances instead.
"""

from __future__ import annotations

from pathlib import PurePosixPath

from cpsysd import escape
from cpsysd.description.instances import instance_names
from cpsysd.description.model import AppSpec
from cpsysd.render.common import (
    MARKER,
    RenderOptions,
    render_template,
    service_context,
    socket_unit_name,
)
from cpsysd.render.workers import (
    render_instance_service,
    service_template_name,
    socket_template_name,
    target_name,
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


def release_worker_template_name(name: str, release_id: str) -> str:
    """``NAME-release-ID@.service``: the template of one release's worker instances."""
    return f"{name}-release-{release_id}@.service"


def release_worker_unit(name: str, release_id: str, instance: str) -> str:
    """``NAME-release-ID@I.service``: worker instance ``I`` of release ``ID``."""
    return f"{name}-release-{release_id}@{instance}.service"


def render_release_worker_service(
    spec: AppSpec, release_id: str, releases_dir: PurePosixPath = RELEASES_DIR
) -> str:
    """The template ``NAME-release-ID@.service``: the app's instance template (the same sandbox,
    ``PartOf=NAME.target``) with its paths in release ``ID`` and instance ``%i``'s sockets
    shared with the release it replaces."""
    root = escape.escape_specifiers(str(app_releases_dir(spec.name, releases_dir) / release_id))
    if any(ch.isspace() or ch in "\"'\\;" for ch in root):
        raise ValueError(f"{root!r}: a releases directory needs a plain path")
    description = f"{root}/{RELEASE_DESCRIPTION}"
    return render_instance_service(
        spec,
        RenderOptions(description_path=description),
        description_suffix=f" (release {release_id})",
        exec_start=f"{root}/venv/bin/python -m cpsysd serve -c {description}",
        working_directory=f"{root}/app",
        shared_sockets=[socket_template_name(spec, fd, "%i") for fd in spec.fd_names],
    )


def worker_socket_dropins(spec: AppSpec, instance: str) -> list[str]:
    """The drop-ins that point instance ``instance``'s sockets at its live release:
    ``NAME@I.socket.d/cpsysd-release.conf``, one per socket name."""
    return [f"{socket_template_name(spec, fd, instance)}.d/{DROPIN_NAME}" for fd in spec.fd_names]


def socket_dropins(spec: AppSpec) -> list[str]:
    """The drop-in paths (relative to the unit directory) that point each socket at the live
    release: ``NAME.socket.d/cpsysd-release.conf``, one per socket unit."""
    return [f"{socket_unit_name(spec, fd)}.d/{DROPIN_NAME}" for fd in spec.fd_names]


def render_socket_dropin(spec: AppSpec, release_id: str, instance: str | None = None) -> str:
    """A socket's drop-in: ``Service=`` the live release (of worker ``instance`` when given;
    see the module docstring)."""
    unit = (
        release_unit(spec.name, release_id)
        if instance is None
        else release_worker_unit(spec.name, release_id, instance)
    )
    return (
        f"# {MARKER}\n"
        "# cpsysd deploy points the socket at the live release; cpsysd rollback too.\n"
        f"[Socket]\nService={unit}\n"
    )


def render_boot_dropins(spec: AppSpec, release_id: str) -> dict[str, str]:
    """Drop-in path (relative to the unit directory) -> text, written once ``release_id`` is
    live (see the module docstring): ``NAME.service.d/`` or ``NAME@.service.d/`` with a
    condition that is never met, and with workers ``NAME.target.d/`` wanting the release's
    instances. The names are cpsysd's own (:data:`DROPIN_NAME`); a user's drop-ins stay."""
    installed = service_template_name(spec) if spec.workers > 1 else f"{spec.name}.service"
    skip = (
        f"# {MARKER}\n"
        f"# Release {release_id} is live: its units serve {spec.name}. This unit of cpsysd\n"
        "# install runs the code in working_directory, so it skips every start (boot, a\n"
        '# target, by hand): "/" always exists. cpsysd uninstall removes this drop-in.\n'
        "[Unit]\nConditionPathExists=!/\n"
    )
    dropins = {f"{installed}.d/{DROPIN_NAME}": skip}
    if spec.workers > 1:
        wants = "".join(
            f"Wants={release_worker_unit(spec.name, release_id, instance)}\n"
            for instance in instance_names(spec)
        )
        dropins[f"{target_name(spec)}.d/{DROPIN_NAME}"] = (
            f"# {MARKER}\n"
            f"# Boot and systemctl start|restart {target_name(spec)} start the live release.\n"
            f"[Unit]\n{wants}"
        )
    return dropins


def boot_dropins(spec: AppSpec) -> list[str]:
    """The paths :func:`render_boot_dropins` writes, whichever release is live."""
    return list(render_boot_dropins(spec, "r0"))
