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

A third check protects root rather than the service: ``install`` runs the app's interpreter as
root to byte-compile it. Isolated from ``site`` (``-I -S``) it executes no ``.pth`` file, but the
interpreter binary, the virtualenv's ``pyvenv.cfg`` (its ``home =`` picks the standard library
that runs) and the directories holding them still decide what runs. So none of them, nor the
working directory, may be writable by anyone but root or the service's own named user:
:func:`writable_by_others`.

The renewal job (``NAME-cert-renew.service``, with ``[tls] renew_days`` or ``acme``) is
stricter: it runs ``PYTHON -m cpsysd cert renew`` as root every time the timer fires, with
``site`` enabled, so every ``.pth`` file and module of the virtualenv runs as uid 0. There the
service's own user is one too many: the interpreter and the whole virtualenv must be root's
(:func:`not_root_owned`).
"""

from __future__ import annotations

import contextlib
import grp
import os
import pwd
import stat
from pathlib import PurePosixPath

from cpsysd.description.load import AppSpec
from cpsysd.errors import InstallError
from cpsysd.records import record
from cpsysd.render.common import protect_home_tree
from cpsysd.render.renew import renew_unit_names

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


def _trusted_ids(spec: AppSpec) -> tuple[set[int], set[int]]:
    """Owners and groups that may write the app's files: root, and a named service user (who
    may change its own app anyway) with its primary group."""
    uids, gids = {0}, {0}
    if spec.user is not None:
        try:
            account = pwd.getpwnam(spec.user)
        except KeyError:
            return uids, gids
        uids.add(account.pw_uid)
        gids.add(account.pw_gid)
    return uids, gids


def _venv_files(python: str) -> list[str]:
    """The files of the virtualenv ``python`` lives in that steer what it runs: its root,
    pyvenv.cfg and site-packages directories (where ``.pth`` files are found, site(7))."""
    root = os.path.dirname(os.path.dirname(python))
    config = os.path.join(root, "pyvenv.cfg")
    if not os.path.isfile(config):
        return []
    found = [root, config]
    for lib in (os.path.join(root, "lib"), os.path.join(root, "lib64")):
        with contextlib.suppress(OSError):
            found += [os.path.join(lib, name, "site-packages") for name in sorted(os.listdir(lib))]
    return found


def _changeable(
    paths: list[str], uids: set[int], gids: set[int], because: str, seen: set[str]
) -> list[str]:
    """Each of ``paths`` (and the directories above it) that someone outside ``uids``/``gids``
    owns or may write. A root-owned sticky directory (/tmp) counts as safe: others cannot
    rename what is in it. Paths that do not exist (yet) are not judged; links are not
    followed (their own mode means nothing, their directory's does)."""
    problems = []
    for path in paths:
        for each in [*reversed(PurePosixPath(path).parents), PurePosixPath(path)]:
            if str(each) in seen:
                continue
            seen.add(str(each))
            try:
                info = os.lstat(each)
            except OSError:
                continue
            mode = info.st_mode
            if stat.S_ISLNK(mode):
                continue
            if info.st_uid not in uids:
                why = f"owned by uid {info.st_uid}"
            elif mode & stat.S_IWOTH and not (mode & stat.S_ISVTX and info.st_uid == 0):
                why = f"writable by others (mode {stat.filemode(mode)[1:]})"
            elif mode & stat.S_IWGRP and info.st_gid not in gids:
                why = f"writable by group {info.st_gid} (mode {stat.filemode(mode)[1:]})"
            else:
                continue
            problems.append(f"{each} is {why}, and {because}")
    return problems


def writable_by_others(spec: AppSpec) -> list[str]:
    """Each path among the working directory, the interpreter (its link and its target), the
    virtualenv's and all their parent directories that someone other than root or the service's
    named user could change."""
    uids, gids = _trusted_ids(spec)
    paths = [spec.working_directory, spec.python, os.path.realpath(spec.python)]
    paths += _venv_files(spec.python)
    because = "install runs the app's interpreter as root"
    return _changeable(paths, uids, gids, because, set())


def venv_root(python: str) -> str | None:
    """The virtualenv ``python`` belongs to (the directory holding pyvenv.cfg), or None."""
    root = os.path.dirname(os.path.dirname(python))
    return root if os.path.isfile(os.path.join(root, "pyvenv.cfg")) else None


def not_root_owned(spec: AppSpec) -> list[str]:
    """With a renewal job (which runs the app's interpreter as root, site and all): the
    interpreter, its target, and every file and directory of its virtualenv (walked without
    following links) that is not root's alone. Empty without a renewal job."""
    names = renew_unit_names(spec)
    if names is None:
        return []
    paths = [spec.python, os.path.realpath(spec.python)]
    root = venv_root(spec.python)
    if root is not None:
        paths.append(root)
        # A module file the deploy user owns in a root-owned directory is just as good a way
        # in as the directory itself, so every entry counts; bounded by the venv's own size.
        for directory, dirs, files in os.walk(root):
            paths += [os.path.join(directory, name) for name in dirs + files]
    because = f"{names[1]} runs the app's interpreter as root"
    return _changeable(paths, {0}, {0}, because, set())


def check_reachable(spec: AppSpec, *, interpreter_only: bool = False) -> None:
    """Raise InstallError naming the first path the system service of ``spec`` cannot use, or
    the first one that others could change under root's feet (:func:`writable_by_others`).
    ``interpreter_only``: judge only whether the service could run ``python`` (``cpsysd try``,
    which copies the working directory and config, refuses what install would refuse)."""
    problems = unreachable(spec)
    if interpreter_only:
        problems = [p for p in problems if "run the interpreter" in p]
        if not problems:
            return
    if not problems:
        unsafe = writable_by_others(spec)
        if unsafe:
            owner = "root" if spec.user is None else f"root or {spec.user}"
            more = f" (and {len(unsafe) - 1} more)" if len(unsafe) > 1 else ""
            raise InstallError(
                unsafe[0] + more,
                f"make it owned by {owner} and not writable by group or others (chown, chmod go-w)",
            )
        unsafe = not_root_owned(spec)
        if unsafe:
            tree = venv_root(spec.python) or spec.python
            more = f" (and {len(unsafe) - 1} more)" if len(unsafe) > 1 else ""
            raise InstallError(
                unsafe[0] + more,
                f"make it root's (chown -R root:root {tree}; chmod -R go-w {tree}), "
                "or drop [tls] renew_days and acme",
            )
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
