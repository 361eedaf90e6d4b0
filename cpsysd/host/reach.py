"""Can the service reach its own files? Checked by ``cpsysd install`` before it writes a unit.

A system unit that passes ``systemd-analyze verify`` still fails at its first request when its
user cannot enter the working directory or run the interpreter: systemd reports it only in the
journal (``Failed at step CHDIR ... Permission denied``), and the client sees a reset connection.
Two causes are common and can be told exactly before installing:

- ``ProtectHome=yes`` (every generated system service has it, systemd.exec(5)) makes ``/home``,
  ``/root`` and ``/run/user`` empty and inaccessible, whatever their modes: an app or virtualenv
  there cannot run as a system service.
- Mode bits: a DynamicUser has a fresh UID and no supplementary groups, so only the "other" bits
  apply to it; a named user gets the owner, group or other bits, as the kernel picks them
  (path_resolution(7)). A file with a POSIX ACL is not judged (its ACL may grant more); a path
  that does not exist yet (a package that is still being unpacked) is not judged either.

TLS files and the EnvironmentFile are not checked: systemd reads those as root, before the
sandbox exists (LoadCredential=, EnvironmentFile=).
"""

from __future__ import annotations

import grp
import os
import pwd
import stat
from pathlib import PurePosixPath

from cpsysd.description.load import AppSpec
from cpsysd.errors import InstallError
from cpsysd.records import record
from cpsysd.render.common import protect_home_tree

_READ, _EXECUTE = 4, 1
_ACL_XATTR = "system.posix_acl_access"


@record
class ServiceUser:
    """Who the service runs as: ``uid`` None for a DynamicUser (only "other" bits apply)."""

    label: str
    uid: int | None = None
    gids: frozenset[int] = frozenset()


def service_user(spec: AppSpec) -> ServiceUser | None:
    """The identity to check ``spec``'s paths for, or None when it cannot be judged here (root,
    or a named user that does not exist yet: a package may create it later)."""
    if spec.user is None:
        return ServiceUser("the service's DynamicUser")
    try:
        account = pwd.getpwnam(spec.user)
    except KeyError:
        return None
    if account.pw_uid == 0:
        return None
    gid = account.pw_gid
    if spec.group is not None:
        try:
            gid = grp.getgrnam(spec.group).gr_gid
        except KeyError:
            return None
    groups = frozenset(os.getgrouplist(spec.user, gid)) | {gid}
    return ServiceUser(f"the service's user {spec.user}", account.pw_uid, groups)


def _bits(info: os.stat_result, user: ServiceUser) -> int:
    if user.uid is not None and info.st_uid == user.uid:
        return (info.st_mode >> 6) & 7
    if info.st_gid in user.gids:
        return (info.st_mode >> 3) & 7
    return info.st_mode & 7


def _has_acl(path: str) -> bool:
    try:
        return bool(os.getxattr(path, _ACL_XATTR))
    except OSError:
        return False


def _denied(path: str, want: int, user: ServiceUser) -> str | None:
    """Why ``user`` lacks ``want`` on ``path`` (symlinks followed), or None if it has it or the
    path cannot be judged."""
    try:
        info = os.stat(path)
    except OSError:
        return None
    if _bits(info, user) & want == want or _has_acl(path):
        return None
    return f"mode {stat.filemode(info.st_mode)[1:]}, owner uid {info.st_uid}"


def _hidden(path: str) -> str | None:
    return protect_home_tree(path) or protect_home_tree(os.path.realpath(path))


def _path_problem(path: str, want: int, verb: str, user: ServiceUser) -> str | None:
    """The first reason ``user`` cannot ``verb`` ``path``: a hidden tree, a directory on the
    way it cannot enter, or missing bits on the path itself."""
    hidden = _hidden(path)
    if hidden:
        return (
            f"{hidden} is hidden from system services (ProtectHome=yes), "
            f"so the service cannot {verb} {path}"
        )
    real = os.path.realpath(path)
    parents: list[str] = []
    for chain in (PurePosixPath(path).parents, PurePosixPath(real).parents):
        parents += [str(p) for p in reversed(list(chain)) if str(p) not in parents]
    for directory in parents:
        why = _denied(directory, _EXECUTE, user)
        if why:
            return f"{user.label} cannot enter {directory} ({why}), so it cannot {verb} {path}"
    why = _denied(path, want, user)
    if why:
        return f"{user.label} cannot {verb} {path} ({why})"
    return None


def unreachable(spec: AppSpec) -> list[str]:
    """Every reason the system service of ``spec`` could not start because of its own paths."""
    user = service_user(spec)
    if user is None:
        return []
    checks = [
        (spec.working_directory, _READ | _EXECUTE, "use the working directory"),
        (spec.python, _EXECUTE, "run the interpreter"),
    ]
    if spec.config:
        checks.append((spec.config, _READ, "read the CherryPy config"))
    problems = []
    for path, want, verb in checks:
        problem = _path_problem(path, want, verb, user)
        if problem:
            problems.append(problem)
    return problems


def check_reachable(spec: AppSpec) -> None:
    """Raise InstallError naming the first path the system service of ``spec`` cannot use."""
    problems = unreachable(spec)
    if not problems:
        return
    first = problems[0]
    if "ProtectHome" in first:
        hint = (
            f"move the app and its virtualenv out of it (e.g. to /srv/{spec.name}), or use --user"
        )
    elif spec.user is None:
        hint = "let others enter and read it (chmod o+rx on directories, o+r on files), "
        hint += "or set user = to an account that can"
    else:
        hint = f"give {spec.user} access (chmod, chgrp), or set user = to an account that can"
    more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
    raise InstallError(first + more, hint)
