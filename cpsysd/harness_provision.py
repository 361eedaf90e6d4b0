"""Make this cpsysd, and what it needs, runnable by hardened services inside a harness container.

A DynamicUser service with ``ProtectSystem=strict`` and ``ProtectHome=yes`` can neither read a
virtualenv in root's home nor write bytecode caches, and CI clones the checkout to places no
service may read. So the container gets a virtualenv of its own under :data:`VENV`, made from
Debian's ``/usr/bin/python3``, holding copies (streamed as tar, never bind mounts) of:

- every distribution cpsysd needs at run time (its ``Requires-Dist`` closure, without extras),
  file by file from their install records, from wherever this interpreter imports them;
- the cpsysd package of this process, with the unit templates laid out as the wheel does
  (``cpsysd/units``);

then byte-compiles it all, so services start without writing caches. Distributions that the
container's own ``/usr/bin/python3`` already imports (Debian's packages, e.g. a ``.deb`` of
cpsysd) are not copied; the virtualenv then sees the system site-packages.
"""

from __future__ import annotations

import importlib.metadata as metadata
import json
import re
import sys
import tarfile
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

import cpsysd
from cpsysd.errors import HarnessError

if TYPE_CHECKING:
    from cpsysd.harness import Container

VENV = "/opt/cpsysd/venv"
SYSTEM_PYTHON = "/usr/bin/python3"
_REQUIREMENT = re.compile(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)")


def _key(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()  # PEP 503 normalisation


def runtime_distributions(root: str = "cpsysd") -> list[metadata.Distribution]:
    """``root`` and every installed distribution it requires at run time, recursively.

    Requirements under an ``extra`` marker are skipped; other markers are not evaluated, a
    requirement that is not installed here (e.g. colorama, for Windows) is simply skipped."""
    found: dict[str, metadata.Distribution] = {}
    pending = [root]
    while pending:
        name = pending.pop()
        if _key(name) in found:
            continue
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue
        found[_key(name)] = dist
        for requirement in dist.requires or []:
            spec, _, marker = requirement.partition(";")
            match = _REQUIREMENT.match(spec)
            if match and "extra" not in marker:
                pending.append(match.group(1))
    return list(found.values())


def _readable(info: tarfile.TarInfo) -> tarfile.TarInfo:
    """Root-owned, readable (and directories searchable) by every user: DynamicUser services
    get a fresh UID that owns nothing."""
    info.uid = info.gid = 0
    info.uname = info.gname = "root"
    info.mode = 0o755 if info.isdir() or info.mode & 0o111 else 0o644
    return info


def _inside_system_path(path: Path, system_paths: list[str]) -> bool:
    return any(entry and path.is_relative_to(entry) for entry in system_paths)


def _tree(base: Path, top: Path) -> list[tuple[Path, str]]:
    paths = sorted(top.rglob("*")) if top.is_dir() else [top]
    return [(path, path.relative_to(base).as_posix()) for path in paths if path.is_file()]


def _distribution_files(dist: metadata.Distribution) -> list[tuple[Path, str]]:
    """(host file, path relative to site-packages) of one distribution: from its RECORD, or
    for a legacy egg-info install (whose file list is the source tree's) its top-level names."""
    base = Path(str(dist.locate_file("")))
    if dist.read_text("RECORD") is None:
        tops = (dist.read_text("top_level.txt") or "").split()
        files: list[tuple[Path, str]] = []
        for top in tops:
            for path in [base / top, *base.glob(f"{top}.py"), *base.glob(f"{top}.*.so")]:
                if path.exists():
                    files += _tree(base, path)
        info = getattr(dist, "_path", None)  # the .egg-info directory of a PathDistribution
        if isinstance(info, Path) and info.parent == base:
            files += _tree(base, info)
        if not files:
            raise HarnessError(
                f"cannot tell which files belong to {dist.metadata['Name']}",
                "reinstall it with pip",
            )
        return files
    files = []
    for entry in dist.files or []:
        relative = PurePosixPath(str(entry))
        if ".." in relative.parts or relative.is_absolute():
            continue  # console scripts in bin/: not needed, services run python -m
        source = base / str(relative)
        if source.is_file():
            files.append((source, str(relative)))
    return files


def _cpsysd_files(package: Path) -> list[tuple[Path, str]]:
    """The cpsysd package (no bytecode of the host's) and its unit templates as cpsysd/units."""
    files = [
        (path, f"cpsysd/{path.relative_to(package)}")
        for path in sorted(package.rglob("*"))
        if path.is_file() and "__pycache__" not in path.parts
    ]
    if not (package / "units").is_dir():  # a source checkout: templates beside the package
        units = package.parent / "units"
        if not units.is_dir():
            raise HarnessError(f"cannot find cpsysd's unit templates next to {package}")
        files += [
            (path, f"cpsysd/units/{path.relative_to(units)}")
            for path in sorted(units.rglob("*"))
            if path.is_file()
        ]
    return files


def _probe(box: Container) -> tuple[str, list[str]]:
    script = "import json, sys; print(json.dumps(['%d.%d' % sys.version_info[:2], sys.path]))"
    version, paths = json.loads(box.run([SYSTEM_PYTHON, "-c", script]).stdout)
    mine = "{}.{}".format(*sys.version_info[:2])
    if version != mine:
        raise HarnessError(
            f"the container's {SYSTEM_PYTHON} is Python {version}, this interpreter is {mine}",
            "run cpsysd from a virtualenv made with Debian's /usr/bin/python3 (scripts/setup.sh)",
        )
    return version, [p for p in paths if p.startswith("/usr/")]


def provision(box: Container) -> str:
    """Create :data:`VENV` inside ``box`` with this cpsysd and its run-time dependencies;
    returns the virtualenv's interpreter (which DynamicUser services can execute)."""
    version, system_paths = _probe(box)
    package = Path(cpsysd.__file__).resolve().parent
    files: list[tuple[Path, str]] = []
    use_system = False
    for dist in runtime_distributions():
        base = Path(str(dist.locate_file(""))).resolve()
        if _key(dist.metadata["Name"]) == "cpsysd":
            # An editable install's record points at the checkout; only its metadata is copied.
            info = [
                (path, rel)
                for path, rel in _distribution_files(dist)
                if ".dist-info/" in rel or ".egg-info/" in rel
            ]
            files += info if not _inside_system_path(base, system_paths) else []
        elif _inside_system_path(base, system_paths):
            use_system = True
        else:
            files += _distribution_files(dist)
    if _inside_system_path(package, system_paths):
        use_system = True
    else:
        files += _cpsysd_files(package)
    venv_argv = [SYSTEM_PYTHON, "-m", "venv", "--without-pip", VENV]
    if use_system:
        venv_argv.insert(3, "--system-site-packages")
    box.run(venv_argv)
    site = f"{VENV}/lib/python{version}/site-packages"

    def fill(archive: tarfile.TarFile) -> None:
        for source, relative in files:
            archive.add(source, arcname=relative, recursive=False, filter=_readable)

    box.send_tar(site, fill)
    python = f"{VENV}/bin/python"
    box.write_file(
        f"{VENV}/bin/cpsysd", f"#!{python}\nfrom cpsysd.cli import main\n\nmain()\n", 0o755
    )
    # Hardened services cannot write __pycache__ (ProtectSystem=strict): compile now. Some
    # dependencies ship files that do not compile (templates, Python 2 leftovers): only
    # cpsysd itself must.
    box.run([python, "-m", "compileall", "-q", site], check=False, timeout=300)
    box.run([python, "-m", "compileall", "-q", f"{site}/cpsysd"], timeout=120)
    return python
