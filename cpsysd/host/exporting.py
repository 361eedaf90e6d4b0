"""``cpsysd export ansible``: write the rendered role (:mod:`cpsysd.targets.ansible`) into a
directory and copy the app's files into it, each file replaced atomically.

The copy is what the role deploys (``roles/ROLE/files/app``): a snapshot, like a package, so a
run of the playbook deploys what was exported, not whatever the working tree holds by then.
Byte code, version control and virtualenvs are left out (the hosts compile the app themselves),
and so are files others may not read: a private key or a ``.env`` beside the app must not
travel in the clear; secrets go through ``cpsysd_secrets`` (Ansible Vault) instead.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

from cpsysd import fsutil
from cpsysd.description.load import AppSpec
from cpsysd.errors import CpsysdError
from cpsysd.targets.ansible import render_role, role_name

# A directory cpsysd export made: replacing its files is fine, other directories are not ours.
STAMP = ".cpsysd-export"
_SKIPPED_DIRS = {"__pycache__", ".git", ".hg", ".svn", ".venv", "venv", "node_modules", ".tox"}
_SKIPPED_SUFFIXES = (".pyc", ".pyo", ".cpsysd-tmp")


@dataclass
class ExportReport:
    """What :func:`export_ansible` wrote, removed (stale app files) and left out."""

    written: list[Path] = field(default_factory=list)
    removed: list[Path] = field(default_factory=list)
    private: list[Path] = field(default_factory=list)


def _check_output(output: Path) -> None:
    if output.exists() and not output.is_dir():
        raise CpsysdError(f"{output} is not a directory", "give a directory, e.g. -o deploy")
    if output.is_dir() and any(output.iterdir()) and not (output / STAMP).exists():
        raise CpsysdError(
            f"{output} is not empty and was not made by cpsysd export",
            "give a new or empty directory",
        )


def _app_files(source: Path, skip: Path) -> tuple[dict[Path, Path], list[Path]]:
    """Relative path -> file of the app to copy, and the private files left out. ``skip``: the
    output directory, which may lie inside the app's directory."""
    found: dict[Path, Path] = {}
    private: list[Path] = []
    for directory, subdirs, names in os.walk(source):
        here = Path(directory)
        subdirs[:] = sorted(
            d for d in subdirs if d not in _SKIPPED_DIRS and (here / d).resolve() != skip
        )
        for name in sorted(names):
            path = here / name
            info = path.lstat()
            if not stat.S_ISREG(info.st_mode) or name.endswith(_SKIPPED_SUFFIXES):
                continue  # symlinks, sockets and byte code stay behind
            if not info.st_mode & stat.S_IROTH:
                private.append(path)
                continue
            found[path.relative_to(source)] = path
    return found, private


def export_ansible(spec: AppSpec, output: Path, serial: str = "1") -> ExportReport:
    """Write the playbook and role for ``spec`` into ``output`` and copy the app into the role."""
    files = render_role(spec, serial)  # refuses bad input before anything is written
    _check_output(output)
    source = Path(spec.working_directory)
    if not source.is_dir():
        raise CpsysdError(
            f"working_directory {source} is not a directory",
            "export on a machine that has the app's files",
        )
    app_files, private = _app_files(source, output.resolve())
    report = ExportReport(private=private)
    fsutil.make_directories(output)
    fsutil.atomic_write(output / STAMP, b"cpsysd export ansible\n")
    for name, text in files.items():
        fsutil.atomic_write(output / name, text.encode(), 0o644)
        report.written.append(output / name)
    app_dir = output / "roles" / role_name(spec) / "files" / "app"
    for relative, path in app_files.items():
        mode = 0o755 if path.stat().st_mode & stat.S_IXUSR else 0o644
        try:
            data = path.read_bytes()
        except OSError as err:
            raise CpsysdError(f"cannot read {path}: {err.strerror}") from None
        fsutil.atomic_write(app_dir / relative, data, mode)
        report.written.append(app_dir / relative)
    if app_dir.is_dir():  # files of an earlier export that the app no longer has
        for old in sorted(app_dir.rglob("*")):
            if old.is_file() and old.relative_to(app_dir) not in app_files:
                fsutil.remove(old)
                report.removed.append(old)
    return report
