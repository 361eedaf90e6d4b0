"""Make this cpsysd, and what it needs, runnable by hardened services inside a harness container.

A DynamicUser service with ``ProtectSystem=strict`` and ``ProtectHome=yes`` can neither read a
virtualenv in root's home nor write bytecode caches, and CI clones the checkout to places no
service may read. So the container gets a virtualenv of its own under :data:`VENV`, made from
Debian's ``/usr/bin/python3``, holding copies (streamed as tar, never bind mounts) of:

- every distribution cpsysd needs at run time (its ``Requires-Dist`` closure, without extras),
  file by file from their install records, from wherever this interpreter imports them;
- the cpsysd package of this process, with the unit templates laid out as the wheel does
  (``cpsysd/units``);
- for ``cpsysd try``, the other distributions that the app's own interpreter (the description's
  ``python``, :func:`ask_interpreter`) imports, so that the service finds the app's dependencies
  as it will once installed for real; cpsysd and its closure stay this process's (they win where
  both ship a file), pip and cpsysd's own development tools are left out
  (:func:`app_distributions`);

then byte-compiles it all, so services start without writing caches. Distributions that the
container's own ``/usr/bin/python3`` already imports (Debian's packages, e.g. a ``.deb`` of
cpsysd) are not copied; the virtualenv then sees the system site-packages.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata as metadata
import json
import re
import sys
import tarfile
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

import cpsysd
from cpsysd.errors import CommandError, HarnessError, SpecError
from cpsysd.host.run import capture

if TYPE_CHECKING:
    from cpsysd.harness.container import Container

VENV = "/opt/cpsysd/venv"
SYSTEM_PYTHON = "/usr/bin/python3"
_REQUIREMENT = re.compile(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)")
# Asked of the container's python3 and of the app's interpreter: version and import path.
_ASK_PATH = "import json, sys; print(json.dumps(['%d.%d' % sys.version_info[:2], sys.path]))"
_FIX_PYTHON = "set python to the interpreter that has the app's packages, e.g. its virtualenv's"


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
        pending += _required(dist)
    return list(found.values())


def _required(dist: metadata.Distribution, *, extras: bool = False) -> list[str]:
    """The names ``dist`` requires; with ``extras``, also those of its optional extras. Markers
    other than ``extra`` are not evaluated."""
    names = []
    for requirement in dist.requires or []:
        spec, _, marker = requirement.partition(";")
        match = _REQUIREMENT.match(spec)
        if match and (extras or "extra" not in marker):
            names.append(match.group(1))
    return names


def _closure(roots: list[str], installed: dict[str, metadata.Distribution]) -> set[str]:
    """The normalised names of ``roots`` and of everything they require at run time, as far as
    it is in ``installed`` (keyed by normalised name)."""
    seen: set[str] = set()
    pending = [_key(name) for name in roots]
    while pending:
        key = pending.pop()
        if key not in seen and key in installed:
            seen.add(key)
            pending += [_key(name) for name in _required(installed[key])]
    return seen


def app_distributions(
    distributions: tuple[metadata.Distribution, ...], ours: set[str]
) -> tuple[list[metadata.Distribution], list[metadata.Distribution]]:
    """Of an app interpreter's ``distributions``, those the app may import that are not in
    ``ours`` (normalised names of what is provisioned anyway), and those left out: pip (no
    service imports its installer) and what is there only for cpsysd's optional extras (its
    development tools, in a virtualenv made with ``pip install -e .[dev]``), unless installed
    by name (pip's ``REQUESTED`` marker) or required by something kept."""
    installed = {_key(dist.metadata["Name"]): dist for dist in distributions}
    cpsysd_dist = installed.get("cpsysd")
    tools = _closure(_required(cpsysd_dist, extras=True), installed) if cpsysd_dist else set()
    roots = [
        key
        for key, dist in installed.items()
        if key not in ours
        and key != "pip"
        and (key not in tools or dist.read_text("REQUESTED") is not None)
    ]
    wanted = _closure(roots, installed) - ours
    kept = [dist for key, dist in installed.items() if key in wanted]
    left_out = [dist for key, dist in installed.items() if key not in wanted | ours]
    return kept, left_out


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
    version, paths = json.loads(box.run([SYSTEM_PYTHON, "-c", _ASK_PATH]).stdout)
    mine = "{}.{}".format(*sys.version_info[:2])
    if version != mine:
        raise HarnessError(
            f"the container's {SYSTEM_PYTHON} is Python {version}, this interpreter is {mine}",
            "run cpsysd from a virtualenv made with Debian's /usr/bin/python3 (scripts/setup.sh)",
        )
    return version, [p for p in paths if p.startswith("/usr/")]


@dataclasses.dataclass(frozen=True)
class AppInterpreter:
    """An app's interpreter on this host: its Python version and the distributions it imports
    (the first of each name on its ``sys.path``, as importlib.metadata finds them)."""

    python: str
    version: str
    distributions: tuple[metadata.Distribution, ...]


def ask_interpreter(python: str) -> AppInterpreter:
    """Ask ``python`` (with ``-I``: no PYTHONPATH, user site or current directory) for its
    version and ``sys.path``; the distributions on that path are read here. Raises
    :class:`SpecError` (field ``python``) when it is missing or cannot answer, rather than let
    the app's packages go missing without a word."""
    if not Path(python).exists():
        raise SpecError("python", f"{python} does not exist on this host", _FIX_PYTHON)
    try:
        result = capture([python, "-I", "-c", _ASK_PATH], timeout=60)
    except CommandError as err:
        raise SpecError("python", err.message, _FIX_PYTHON) from err
    if result.status is None:
        raise SpecError("python", f"{python} did not answer within 60 s", _FIX_PYTHON)
    try:
        version, paths = json.loads(result.stdout)
        answered = result.status == 0 and isinstance(paths, list)
    except (ValueError, TypeError):  # not JSON, or not a pair
        answered = False
    if not answered:
        lines = result.stderr.strip().splitlines() or [f"exit status {result.status}"]
        raise SpecError("python", f"{python} did not list its packages: {lines[-1]}", _FIX_PYTHON)
    found: dict[str, metadata.Distribution] = {}
    for dist in metadata.distributions(path=[p for p in paths if isinstance(p, str) and p]):
        name = dist.metadata["Name"]
        if name:
            found.setdefault(_key(name), dist)  # the first on sys.path is the one imported
    return AppInterpreter(python, str(version), tuple(found.values()))


@dataclasses.dataclass(frozen=True)
class Provisioned:
    """The container's virtualenv: its interpreter and, of the app interpreter's distributions
    (``NAME VERSION``): those copied, those seen through the system site-packages, those left
    out (see :func:`app_distributions`), and those replaced by cpsysd's own copy of a different
    version (``(NAME, APP'S VERSION, CPSYSD'S VERSION)``)."""

    python: str
    copied: tuple[str, ...] = ()
    system: tuple[str, ...] = ()
    left_out: tuple[str, ...] = ()
    kept_ours: tuple[tuple[str, str, str], ...] = ()


def _own_files(system_paths: list[str]) -> tuple[list[tuple[Path, str]], bool, dict[str, str]]:
    """Files of this cpsysd and its closure to copy, whether the virtualenv needs the system
    site-packages, and the closure's versions by normalised name."""
    package = Path(cpsysd.__file__).resolve().parent
    files: list[tuple[Path, str]] = []
    use_system = False
    versions: dict[str, str] = {}
    for dist in runtime_distributions():
        base = Path(str(dist.locate_file(""))).resolve()
        versions[_key(dist.metadata["Name"])] = dist.version
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
    return files, use_system, versions


def _label(dist: metadata.Distribution) -> str:
    return f"{dist.metadata['Name']} {dist.version}"


def _app_files(
    app: AppInterpreter, ours: dict[str, str], system_paths: list[str]
) -> tuple[list[tuple[Path, str]], Provisioned]:
    """Files of the app's distributions that cpsysd's closure lacks, and what became of each
    (``Provisioned`` without its interpreter)."""
    files: list[tuple[Path, str]] = []
    copied: list[str] = []
    system: list[str] = []
    wanted, left_out = app_distributions(app.distributions, set(ours))
    for dist in wanted:
        if _inside_system_path(Path(str(dist.locate_file(""))).resolve(), system_paths):
            system.append(_label(dist))
        else:
            files += _distribution_files(dist)
            copied.append(_label(dist))
    kept = tuple(
        (dist.metadata["Name"], dist.version, ours[_key(dist.metadata["Name"])])
        for dist in app.distributions
        if _key(dist.metadata["Name"]) in ours and dist.version != ours[_key(dist.metadata["Name"])]
    )
    outcome = Provisioned("", tuple(copied), tuple(system), tuple(map(_label, left_out)), kept)
    return files, outcome


def check_app_version(app: AppInterpreter, version: str | None = None) -> None:
    """Raise :class:`SpecError` when ``app`` is another Python version than the container's
    ``/usr/bin/python3`` (``version``; by default asked of this host's, which is the same file:
    the container's root is an overlay of this machine's)."""
    if version is None:
        asked = capture([SYSTEM_PYTHON, "-I", "-c", _ASK_PATH], timeout=60)
        version = str(json.loads(asked.stdout)[0]) if asked.status == 0 else app.version
    if app.version != version:
        raise SpecError(
            "python",
            f"{app.python} is Python {app.version}, but services in the container run "
            f"{SYSTEM_PYTHON} (Python {version}), where the app's packages would not load",
            f"make the app's virtualenv with {SYSTEM_PYTHON} -m venv",
        )


def provision(box: Container) -> str:
    """Create :data:`VENV` inside ``box`` with this cpsysd and its run-time dependencies;
    returns the virtualenv's interpreter (which DynamicUser services can execute)."""
    return provision_venv(box).python


def provision_venv(box: Container, app: AppInterpreter | None = None) -> Provisioned:
    """:func:`provision`, plus the distributions of ``app`` that cpsysd's closure lacks. Raises
    :class:`SpecError` when ``app`` is another Python version than the container's."""
    version, system_paths = _probe(box)
    if app is not None:
        check_app_version(app, version)
    files, use_system, ours = _own_files(system_paths)
    app_files, outcome = _app_files(app, ours, system_paths) if app else ([], Provisioned(""))
    venv_argv = [SYSTEM_PYTHON, "-m", "venv", "--without-pip", VENV]
    if use_system or outcome.system:
        venv_argv.insert(3, "--system-site-packages")
    box.run(venv_argv)
    site = f"{VENV}/lib/python{version}/site-packages"

    def fill(archive: tarfile.TarFile) -> None:
        # The app's files first: where both ship a file, cpsysd's closure (extracted later) wins.
        for source, relative in app_files + files:
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
    return dataclasses.replace(outcome, python=python)
