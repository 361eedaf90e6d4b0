"""What a manifest or ``.pending`` journal may name: only the files cpsysd writes for the app.

Both are read back from a directory someone else may write (a ``--root`` build tree, a user's
state directory), and they steer deletions and ``systemctl disable``. A planted one naming
``/etc/passwd`` or ``../../x`` must not make cpsysd touch it: such a file is refused with one
line, before anything is changed.
"""

from __future__ import annotations

import re
from pathlib import Path, PurePosixPath
from typing import Any, NoReturn

from cpsysd.errors import InstallError
from cpsysd.records import record

_UNIT_SUFFIXES = r"\.(service|socket|timer|target)"


@record
class AppFiles:
    """The files cpsysd may write for app ``name``: units in ``unit_dirs``, the description
    and the root-only environment file beside it."""

    name: str
    unit_dirs: frozenset[PurePosixPath]
    description: PurePosixPath

    @property
    def environment(self) -> PurePosixPath:
        """``NAME.env`` beside ``NAME.toml``: the app's environment, mode 0600."""
        return self.description.with_suffix(".env")

    def has_unit(self, unit: object) -> bool:
        """A unit name derived from the app's name: NAME.service, NAME@.service,
        NAME-FDNAME.socket, NAME-cert-renew.timer, NAME.target and the like."""
        pattern = rf"{re.escape(self.name)}([-@][A-Za-z0-9_.:@-]*)?{_UNIT_SUFFIXES}"
        return isinstance(unit, str) and re.fullmatch(pattern, unit) is not None

    def has_file(self, live: object) -> bool:
        """``live`` spelled exactly (absolute, no '..', no '//') as one of the app's files."""
        if not isinstance(live, str) or str(PurePosixPath(live)) != live or ".." in live:
            return False
        path = PurePosixPath(live)
        if not path.is_absolute():
            return False
        return path in (self.description, self.environment) or (
            path.parent in self.unit_dirs and self.has_unit(path.name)
        )


def _refuse(allowed: AppFiles, source: Path, bad: list[object]) -> NoReturn:
    what = (
        f"names {bad[0]!r}, which is not a file cpsysd writes for {allowed.name}"
        if bad
        else "is not a cpsysd manifest or journal"
    )
    raise InstallError(
        f"{source} {what}; nothing was changed", f"check who wrote {source}, then remove it"
    )


def check_manifest(allowed: AppFiles, data: object, source: Path) -> None:
    """Refuse a manifest (or the one inside a journal) naming anything but the app's files and
    units."""
    if not isinstance(data, dict):
        _refuse(allowed, source, [])
    files: Any = data.get("files")
    units: list[Any] = [data.get("enable", []), data.get("stop", [])]
    if not isinstance(files, dict) or not all(isinstance(group, list) for group in units):
        _refuse(allowed, source, [])
    if not all(isinstance(digest, str) for digest in files.values()):
        _refuse(allowed, source, [])
    bad = [live for live in files if not allowed.has_file(live)]
    bad += [unit for group in units for unit in group if not allowed.has_unit(unit)]
    if bad:
        _refuse(allowed, source, bad)


def check_journal(allowed: AppFiles, journal: dict[str, Any], source: Path) -> None:
    """Refuse a ``.pending`` journal whose writes, removes or manifest name anything else."""
    lists = [journal.get("writes"), journal.get("removes")]
    if "manifest" not in journal or not all(isinstance(paths, list) for paths in lists):
        _refuse(allowed, source, [])
    bad = [live for paths in lists for live in paths or [] if not allowed.has_file(live)]
    if bad:
        _refuse(allowed, source, bad)
    if journal["manifest"] is not None:
        check_manifest(allowed, journal["manifest"], source)
