"""Warnings about where a CherryPy app keeps its sessions, from what the import probe
(:mod:`cpsysd.host.probe`) found in its config and its ``_cp_config``.

They are warnings, not errors: the app starts and most pages work; what breaks is the session.
- RAM sessions (CherryPy's default) live in one process. With ``workers > 1`` every instance has
  its own, and SO_REUSEPORT spreads a browser's connections over them, so a login is forgotten
  whenever another instance answers.
- File sessions must be written: under ``ProtectSystem=strict`` the whole file system is read-only
  but the state directory (``StateDirectory=``, /var/lib/NAME) and the private /tmp and /var/tmp
  (``PrivateTmp=yes``: one per unit, so not shared between worker instances). Elsewhere every
  request with a session answers 500, unless an admin's drop-in adds ``ReadWritePaths=``, which
  cpsysd never reads (so this stays a warning).
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass

from cpsysd.description.load import AppSpec

RECIPE = "docs/recipes.md, CherryPy sessions with workers"
FILE_SESSION = "tools.sessions.storage_class = cherrypy.lib.sessions.FileSession"
PRIVATE_TMP = ("/tmp", "/var/tmp")  # PrivateTmp=yes, systemd.exec(5)


@dataclass(frozen=True)
class SessionUse:
    """One place that turns sessions on (``where``: a config section or a ``_cp_config``),
    the storage it ends up with (``ram``, ``file`` or ``other``) and its ``storage_path``."""

    where: str
    storage: str
    path: str | None = None


def state_path(spec: AppSpec) -> str:
    """Where systemd puts ``StateDirectory=NAME`` for a system service, and so what the service
    gets as ``$STATE_DIRECTORY`` (a DynamicUser's is a symlink to /var/lib/private/NAME)."""
    return f"/var/lib/{spec.name}"


def _within(path: str, top: str) -> bool:
    return path == top or path.startswith(top.rstrip("/") + "/")


def _file_warning(spec: AppSpec, use: SessionUse) -> str | None:
    state = state_path(spec)
    fix = f'set state_directory = true and tools.sessions.storage_path = "{state}" ({RECIPE})'
    if not use.path:
        return f"CherryPy file sessions ({use.where}) have no tools.sessions.storage_path: {fix}"
    path = posixpath.normpath(posixpath.join(spec.working_directory, use.path))
    if spec.state_directory and (
        _within(path, state) or _within(path, f"/var/lib/private/{spec.name}")
    ):
        return None
    for tmp in PRIVATE_TMP:
        if _within(path, tmp) and spec.workers == 1:
            return None  # writable; lost at a restart, as RAM sessions would be
        if _within(path, tmp):
            return (
                f"CherryPy file sessions ({use.where}) in {path}: PrivateTmp=yes gives each of "
                f"the {spec.workers} workers its own {tmp}, so they share no session; {fix}"
            )
    return (
        f"CherryPy file sessions ({use.where}) in {path}, which ProtectSystem=strict keeps "
        f"read-only: requests with a session will answer 500; {fix}"
    )


def _grouped(uses: list[SessionUse]) -> list[SessionUse]:
    """One use per storage and path, naming every place that leads there."""
    places: dict[tuple[str, str | None], list[str]] = {}
    for use in uses:
        places.setdefault((use.storage, use.path), []).append(use.where)
    return [SessionUse(", ".join(where), *key) for key, where in places.items()]


def session_warnings(spec: AppSpec, uses: list[SessionUse]) -> list[str]:
    """One line per way ``spec``'s sessions would break, each naming the fix."""
    warnings: list[str] = []
    for use in _grouped(uses):
        warning = None
        if use.storage == "ram" and spec.workers > 1:
            warning = (
                f"CherryPy keeps sessions in RAM ({use.where}: tools.sessions.on) with "
                f"workers = {spec.workers}: each instance has its own, so a session is lost "
                f"whenever another one answers; store them in files ({FILE_SESSION}) in the "
                f"state directory ({RECIPE})"
            )
        elif use.storage == "file":
            warning = _file_warning(spec, use)
        if warning and warning not in warnings:
            warnings.append(warning)
    return warnings
