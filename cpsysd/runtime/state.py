"""``$STATE_DIRECTORY`` for ``cpsysd serve`` outside systemd, so an app written for
``state_directory = true`` runs unchanged in development.

Under systemd, ``StateDirectory=NAME`` creates /var/lib/NAME for the service's user and sets
``$STATE_DIRECTORY`` to it (systemd.exec(5), "RuntimeDirectory=, StateDirectory=, ..."); every
worker instance gets the same one. Started by hand (or by supervisord), nothing does, and an app
reading ``os.environ["STATE_DIRECTORY"]`` (Django's settings, a CherryPy config's
``tools.sessions.storage_path``) would fail at import. So cpsysd serve sets it, like systemd,
only for a description with ``state_directory = true`` and only when it is not set already (the
caller's value wins: that is how to choose another place):

- as root: /var/lib/NAME, the path systemd would use, owned by ``--user``/``--group`` if given;
- otherwise: ``$XDG_STATE_HOME/NAME`` (default ~/.local/state/NAME, XDG Base Directory spec).

It is created with mode 0700 when missing: sessions and databases are the app's own.
"""

from __future__ import annotations

import os
import pwd
from pathlib import Path

from cpsysd.description.load import AppSpec
from cpsysd.errors import CpsysdError

VARIABLE = "STATE_DIRECTORY"


def local_state_directory(name: str) -> Path:
    """Where ``cpsysd serve`` keeps NAME's state without systemd (see the module's docstring)."""
    if os.geteuid() == 0:
        return Path("/var/lib") / name
    xdg = os.environ.get("XDG_STATE_HOME", "")
    base = Path(xdg) if os.path.isabs(xdg) else Path.home() / ".local" / "state"
    return base / name


def provide_state_directory(
    spec: AppSpec, user: str | None = None, group: str | None = None
) -> str | None:
    """Set ``$STATE_DIRECTORY`` for ``spec`` when systemd did not; returns the path it set."""
    if not spec.state_directory or os.environ.get(VARIABLE):
        return None
    path = local_state_directory(spec.name)
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        if user or group:  # the app runs as them after binding: let it write there
            account = pwd.getpwnam(user) if user else None
            gid = _gid(group) if group else (account.pw_gid if account else -1)
            os.chown(path, account.pw_uid if account else -1, gid)
    except (OSError, KeyError) as err:
        raise CpsysdError(
            f"cannot prepare the state directory {path}: {getattr(err, 'strerror', None) or err}",
            f"set {VARIABLE} to a directory the app may write",
        ) from None
    os.environ[VARIABLE] = str(path)
    return str(path)


def _gid(group: str) -> int:
    import grp

    return grp.getgrnam(group).gr_gid
