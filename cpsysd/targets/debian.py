"""Maintainer scripts for an app's Debian package (``cpsysd debian``).

An app's package ships its code and its description as the conffile ``/etc/cpsysd/NAME.toml``;
its postinst calls ``cpsysd install`` and ``cpsysd cert``, and follows dh_installsystemd's
conventions for the rest (debhelper's ``autoscripts/postinst-systemd-enable``,
``postinst-systemd-restart``, ``prerm-systemd-restart``, ``postrm-systemd``): deb-systemd-helper
enables the sockets on first install and keeps the admin's choice on upgrade, deb-systemd-invoke
starts and stops them (respecting policy-rc.d), and nothing talks to systemd unless
``/run/systemd/system`` exists (sd_booted(3)) and ``DPKG_ROOT`` is unset.

The scripts are rendered when the package is built, from the same description, so the postrm
knows every file by name and works in plain sh after cpsysd itself was removed (a postrm may not
rely on dependencies, Debian Policy 7.2). Rendering is pure (:func:`render_debian`);
:func:`write_debian` writes the files atomically.
"""

from __future__ import annotations

import re
import shlex
import tomllib
from dataclasses import dataclass
from pathlib import Path, PurePath, PurePosixPath

from cpsysd import fsutil
from cpsysd.description.bounds import read_description
from cpsysd.description.instances import instance_names
from cpsysd.description.load import AppSpec, check_path
from cpsysd.errors import CpsysdError, SpecError
from cpsysd.render.common import (
    MARKER,
    SYSTEM_STATE_DIR,
    SYSTEM_UNIT_DIR,
    VENDOR_UNIT_DIR,
    render_template,
)
from cpsysd.render.releases import (
    RELEASES_DIR,
    release_template_name,
    socket_dropins,
    worker_socket_dropins,
)
from cpsysd.render.units import RenderOptions, render_units, units_to_enable

# Debian Policy 5.6.1: lower-case letters, digits, '+', '-', '.'; at least two characters.
_PACKAGE = re.compile(r"[a-z0-9][a-z0-9+.-]+")
GENERATED = "cpsysd-debian-generated: written by `cpsysd debian`; regenerate it, do not edit"
# dpkg fires the app's "triggered" postinst when the cpsysd package changes files here
# (deb-triggers(5)): new templates or runtime code reach the app's units and service.
CPSYSD_PACKAGE_DIR = "/usr/lib/python3/dist-packages/cpsysd"
SCRIPTS = ("postinst", "prerm", "postrm")


@dataclass(frozen=True)
class DebianOptions:
    """How the app's package is laid out.

    ``package``: the binary package name. ``description_path``: where the package installs the
    description (a conffile); default ``/etc/cpsysd/NAME.toml``. ``vendor``: units in the
    package unit directory ``/lib/systemd/system`` (default) rather than the admin's
    ``/etc/systemd/system``. ``triggers``: re-run on cpsysd upgrades (a dpkg file trigger).
    """

    package: str
    description_path: str | None = None
    vendor: bool = True
    triggers: bool = True


def _quote(path: PurePath | str) -> str:
    return shlex.quote(str(path))


def _check_package_description(spec: AppSpec) -> None:
    """A package's description is read from /etc/cpsysd at install time, by Debian's python3:
    paths that default to the build machine's (the file's own directory, the interpreter that
    runs ``cpsysd debian``) would be wrong there, so they must be written out."""
    if spec.source is None:
        return
    try:
        table = tomllib.loads(read_description(Path(spec.source)))
    except (OSError, ValueError):
        return  # load_spec read it a moment ago; nothing more to check
    if Path(spec.source).name == "pyproject.toml":
        table = table.get("tool", {}).get("cpsysd", {})
    required = (("working_directory", "/usr/share/PACKAGE"), ("python", "/usr/bin/python3"))
    for key, example in required:
        if key not in table:
            raise SpecError(
                key,
                "is not set, but a package's app runs from where the package installs it",
                f'add {key} = "{example}" to the description the package ships',
            )


def _tls_context(spec: AppSpec) -> dict[str, object] | None:
    if spec.tls is None:
        return None
    cert, key = PurePosixPath(spec.tls.cert), PurePosixPath(spec.tls.key)
    # Every missing ancestor is created (and recorded) one by one, outermost first; the key's
    # own directory is private (0700) as defence in depth, the key file itself is 0600 anyway.
    modes: dict[PurePosixPath, str] = {}
    for path, leaf_mode in ((cert, "0755"), (key, "0700")):
        for parent in reversed(path.parents[:-1]):  # without "/"
            mode = leaf_mode if parent == path.parent else "0755"
            if modes.get(parent) != "0700":
                modes[parent] = mode
    hosts = " ".join(_quote(host) for host in spec.tls.hosts) or 'localhost "$(uname -n)"'
    return {
        "cert": _quote(cert),
        "key": _quote(key),
        "directories": [(_quote(d), modes[d]) for d in sorted(modes, key=lambda d: len(d.parts))],
        "hosts": hosts,
    }


def debian_context(spec: AppSpec, options: DebianOptions) -> dict[str, object]:
    """The shell-quoted values the maintainer-script templates lay out."""
    if not _PACKAGE.fullmatch(options.package):
        raise CpsysdError(
            f"{options.package!r} is not a Debian package name",
            "use lower-case letters, digits, '+', '-' and '.' (Debian Policy 5.6.1)",
        )
    _check_package_description(spec)
    description = check_path(
        "--description-path", options.description_path or f"/etc/cpsysd/{spec.name}.toml"
    )
    unit_dir = VENDOR_UNIT_DIR if options.vendor else SYSTEM_UNIT_DIR
    state = SYSTEM_STATE_DIR
    resolved = state / f"{spec.name}.toml"
    units = render_units(spec, RenderOptions(str(resolved)))
    enable = units_to_enable(spec)
    # Instances of template units are stopped through their sockets; the templates themselves
    # (NAME@.service) cannot be stopped by name.
    stop = [*enable, *(unit for unit in units if "@." not in unit and unit not in enable)]
    manifest = state / f"{spec.name}.manifest.json"
    files = [unit_dir / unit for unit in units]
    state_files = [resolved, manifest, state / f"{spec.name}.manifest.json.pending"]
    # Staging files an interrupted ``cpsysd install`` may have left (cpsysd.fsutil).
    leftovers = [fsutil.temp_path(Path(p)) for p in (*files, *state_files)]
    return {
        "marker": GENERATED,
        "package": options.package,
        "app": _quote(spec.name),
        "description_path": _quote(description),
        "description_dir": _quote(PurePosixPath(description).parent),
        "install_flags": "--vendor " if options.vendor else "",
        "enable_units": [_quote(u) for u in enable],
        "stop_units": [_quote(u) for u in stop],
        "unit_files": [_quote(f) for f in files],
        "unit_marker": _quote("# " + MARKER.split(":", 1)[0] + ":"),
        "state_files": [_quote(f) for f in (*state_files, *leftovers)],
        "state_dir": _quote(state),
        "manifest": _quote(manifest),
        "created_list": _quote(state / f"{spec.name}.debian-created"),
        "state_directory": _quote(spec.name) if spec.state_directory else None,
        "tls": _tls_context(spec),
        **_release_context(spec),
    }


def _release_context(spec: AppSpec) -> dict[str, object]:
    """What ``cpsysd deploy`` leaves on the machine, for the prerm and postrm: its release units
    (always in /etc/systemd/system, whatever ``--admin-units`` says: deploy writes them there),
    the sockets' drop-ins that name the live release, and the releases themselves. The unit
    names with a release id are shell globs (``*`` left unquoted)."""
    unit_dir = PurePosixPath(SYSTEM_UNIT_DIR)
    if spec.workers > 1:
        dropins = [d for i in instance_names(spec) for d in worker_socket_dropins(spec, i)]
    else:
        dropins = socket_dropins(spec)
    worker_prefix = f"{spec.name}-release-"
    return {
        "release_units": [
            _quote(f"{spec.name}-release@*.service"),
            _quote(f"{worker_prefix}*@*.service"),
        ],
        "release_unit_files": [
            _quote(unit_dir / release_template_name(spec)),
            _quote(unit_dir / worker_prefix) + "*" + _quote("@.service"),
        ],
        "release_dropins": [_quote(unit_dir / d) for d in dropins],
        "release_dropin_dirs": sorted(
            {_quote(unit_dir / PurePosixPath(d).parent) for d in dropins}
        ),
        "releases": _quote(RELEASES_DIR / spec.name),
        "releases_root": _quote(RELEASES_DIR),
        "deploy_socket": _quote(units_to_enable(spec)[0]),
    }


def render_debian(spec: AppSpec, options: DebianOptions) -> dict[str, str]:
    """The files for the package's ``debian/`` directory: file name -> text.

    ``PACKAGE.postinst``, ``.prerm``, ``.postrm`` (each with the ``#DEBHELPER#`` token, where
    dh_installdeb puts the other helpers' snippets) and ``PACKAGE.triggers``.
    """
    context = debian_context(spec, options)
    files = {
        f"{options.package}.{script}": render_template(f"debian/{script}.j2", **context)
        for script in SCRIPTS
    }
    if options.triggers:
        files[f"{options.package}.triggers"] = render_template(
            "debian/triggers.j2", marker=GENERATED, trigger_path=CPSYSD_PACKAGE_DIR
        )
    return files


def write_debian(
    spec: AppSpec, options: DebianOptions, directory: Path, force: bool = False
) -> list[Path]:
    """Write :func:`render_debian`'s files into ``directory`` (scripts 0755), atomically.

    A file there that ``cpsysd debian`` did not write (a maintainer's own postinst) is not
    replaced unless ``force``; nothing is written then.
    """
    files = render_debian(spec, options)
    targets = {directory / name: text for name, text in files.items()}
    for target in targets:
        try:
            current = target.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            continue
        except OSError as err:
            raise CpsysdError(f"cannot read {target}: {err.strerror}") from None
        if GENERATED not in current and not force:
            raise CpsysdError(
                f"{target} exists and was not written by cpsysd debian",
                "move your own script aside (or merge it by hand), or pass --force to replace it",
            )
    for target, text in targets.items():
        mode = 0o755 if target.suffix.lstrip(".") in SCRIPTS else 0o644
        fsutil.atomic_write(target, text.encode(), mode)
    return list(targets)
