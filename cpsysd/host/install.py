"""Install and uninstall an app's units: atomic writes, ownership, a manifest, systemctl calls.

Layout (``--root DIR`` prefixes every path and makes cpsysd call no systemctl):

======================  ================================  =================================
                        system                            ``--user``
======================  ================================  =================================
units                   /etc/systemd/system               ~/.config/systemd/user
units with --vendor     /lib/systemd/system (a package's)  -
resolved description    /var/lib/cpsysd/NAME.toml         ~/.local/state/cpsysd/NAME.toml
environment (0600)      /var/lib/cpsysd/NAME.env          ~/.local/state/cpsysd/NAME.env
manifest                /var/lib/cpsysd/NAME.manifest.json  (same directory)
======================  ================================  =================================

The ``environment`` values go only to ``NAME.env``, created 0600 by whoever installs (root for
the system manager, which reads it before dropping privileges): not into the units, which every
user may read (and ``systemctl show`` prints their ``Environment=`` to anyone), nor into the
resolved description, which the service itself reads. See SECURITY.md, "Secrets".

Every change is one transaction: all new files are staged (written and fsync-ed beside their
targets), then a ``.pending`` journal naming them is written atomically, then the files are
renamed into place and the manifest replaced. A process killed at any point leaves a state that
the next ``install`` or ``uninstall`` completes (roll forward from the journal) or discards
(staged files without a journal), so units are never a mix of two versions once cpsysd ran again.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from cpsysd import escape, fsutil
from cpsysd.description.load import AppSpec, TLSConfig
from cpsysd.description.toml import spec_to_toml
from cpsysd.errors import CpsysdError, InstallError
from cpsysd.host import manifests
from cpsysd.host.deploy import check_install_keeps_workers, retire
from cpsysd.host.preflight import check_preflight
from cpsysd.host.reach import check_reachable
from cpsysd.host.run import run_command, systemctl, systemd_running
from cpsysd.render.common import MARKER, SYSTEM_STATE_DIR, SYSTEM_UNIT_DIR, VENDOR_UNIT_DIR
from cpsysd.render.envfile import environment_file_text
from cpsysd.render.renew import renew_unit_names
from cpsysd.render.units import RenderOptions, render_units, units_to_enable

MANIFEST_FORMAT = 1
# cpsysd's own files are a few KiB: a larger one, or a FIFO or device planted in their place,
# is refused before it is read (a symlink to /dev/zero would fill the memory, a FIFO block).
FILE_READ_MAX = 1 << 20
PRIVATE_MODE = 0o600  # NAME.env: the app's environment, for root (or the --user) only


def _home() -> PurePosixPath:
    return PurePosixPath(os.environ.get("HOME") or os.path.expanduser("~"))


@dataclass(frozen=True)
class InstallTarget:
    """Where and how to install. ``root``: an image or package build directory (no systemctl).
    ``user``: units for the calling user's manager. ``vendor``: the package unit directory.
    ``start``: enable and start the sockets. ``force``: replace units cpsysd did not write."""

    root: Path | None = None
    user: bool = False
    vendor: bool = False
    start: bool = True
    force: bool = False

    def unit_dir(self) -> PurePosixPath:
        if self.user:
            config = os.environ.get("XDG_CONFIG_HOME") or str(_home() / ".config")
            return PurePosixPath(config) / "systemd" / "user"
        return VENDOR_UNIT_DIR if self.vendor else SYSTEM_UNIT_DIR

    def state_dir(self) -> PurePosixPath:
        if self.user:
            state = os.environ.get("XDG_STATE_HOME") or str(_home() / ".local" / "state")
            return PurePosixPath(state) / "cpsysd"
        return SYSTEM_STATE_DIR

    def on_disk(self, live: PurePosixPath) -> Path:
        """Where a path of the running system is in this target's file tree."""
        return fsutil.resolve_in_root(self.root, live) if self.root else Path(live)

    def manager_reachable(self) -> bool:
        """Whether to call systemctl: never with --root; otherwise only if the manager runs."""
        if self.root is not None:
            return False
        if self.user:
            runtime = os.environ.get("XDG_RUNTIME_DIR", f"/run/user/{os.getuid()}")
            return Path(runtime, "systemd", "private").exists()
        return systemd_running()


@dataclass
class InstallReport:
    """What a call changed, for the CLI to print."""

    written: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    enabled: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)  # from the preflight: starts, breaks later


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _paths(name: str, target: InstallTarget) -> tuple[Path, Path]:
    state = target.state_dir()
    return (
        target.on_disk(state / f"{name}.manifest.json"),
        target.on_disk(state / f"{name}.manifest.json.pending"),
    )


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(fsutil.read_regular_file(path, FILE_READ_MAX))
    except FileNotFoundError:
        return None
    except CpsysdError as err:
        raise InstallError(err.message, "remove it and install again") from None
    except ValueError as err:
        raise InstallError(f"{path} is unreadable: {err}", "remove it and install again") from None
    if not isinstance(data, dict):
        raise InstallError(f"{path} is not a cpsysd manifest", "remove it and install again")
    return data


def _allowed(name: str, target: InstallTarget) -> manifests.AppFiles:
    units = {target.unit_dir()} | (set() if target.user else {SYSTEM_UNIT_DIR, VENDOR_UNIT_DIR})
    return manifests.AppFiles(name, frozenset(units), target.state_dir() / f"{name}.toml")


def read_manifest(name: str, target: InstallTarget) -> dict[str, Any] | None:
    """The manifest of an installed app (after completing an interrupted transaction)."""
    recover(name, target)
    manifest = _paths(name, target)[0]
    data = _read_json(manifest)
    if data is not None:
        manifests.check_manifest(_allowed(name, target), data, manifest)
    return data


def _apply(target: InstallTarget, journal: dict[str, Any], manifest: Path, pending: Path) -> None:
    for live in journal["writes"]:
        disk = target.on_disk(PurePosixPath(live))
        if os.path.lexists(fsutil.temp_path(disk)):
            fsutil.commit(disk)
    for live in journal["removes"]:
        fsutil.remove(target.on_disk(PurePosixPath(live)))
    if journal["manifest"] is None:
        fsutil.remove(manifest)
    else:
        fsutil.atomic_write(manifest, json.dumps(journal["manifest"], indent=2).encode() + b"\n")
    fsutil.remove(pending)


def recover(name: str, target: InstallTarget) -> bool:
    """Finish a transaction a killed process left behind; True if there was one."""
    manifest, pending = _paths(name, target)
    journal = _read_json(pending)
    if journal is None:
        return False
    manifests.check_journal(_allowed(name, target), journal, pending)
    _apply(target, journal, manifest, pending)
    return True


def _transaction(
    name: str,
    target: InstallTarget,
    writes: dict[PurePosixPath, bytes],
    removes: list[PurePosixPath],
    manifest_data: dict[str, Any] | None,
) -> None:
    manifest, pending = _paths(name, target)
    for live, data in writes.items():
        fsutil.stage(target.on_disk(live), data, _mode(live))
    journal = {
        "writes": [str(p) for p in writes],
        "removes": [str(p) for p in removes],
        "manifest": manifest_data,
    }
    fsutil.atomic_write(pending, json.dumps(journal).encode())
    _apply(target, journal, manifest, pending)


def _mode(live: PurePosixPath) -> int:
    return PRIVATE_MODE if live.suffix == ".env" else 0o644


def _current(disk: Path) -> bytes | None:
    """The content of ``disk``, None if it does not exist; a symlink, FIFO, device or huge file
    in its place reads as b"\\0" (never cpsysd's) without being opened for long."""
    try:
        return fsutil.read_regular_file(disk, FILE_READ_MAX)
    except FileNotFoundError:
        return None if not os.path.lexists(disk) else b"\0"
    except CpsysdError:
        return b"\0"


def _wider(disk: Path) -> bool:
    """Whether ``disk`` may be read or written by anyone but its owner, or is not ours."""
    info = os.lstat(disk)
    return info.st_mode & 0o077 != 0 or info.st_uid != os.geteuid()


def _is_ours(disk: Path, recorded: dict[str, str]) -> bool:
    data = _current(disk)
    if data is None:
        return True
    return (
        _sha256(data) == recorded.get(str(disk))
        or MARKER.encode() in data
        or data.startswith(b"# Written by cpsysd")
    )


def _precompile(spec: AppSpec, report: InstallReport) -> None:
    """Byte-compile the app with its own interpreter now, as the installing user: the service
    runs under ProtectSystem=strict and cannot write __pycache__, so without this every start
    would compile the app's modules again. compileall only compiles, it imports nothing of the
    app; ``-I -S`` keep the virtualenv's ``.pth`` files and sitecustomize from running too."""
    if not Path(spec.python).exists():
        report.notes.append(f"{spec.python} does not exist yet: the app was not byte-compiled")
        return
    result = run_command(
        [
            spec.python,
            "-I",  # isolated: no PYTHON* variables, no user site, not the cwd on sys.path
            "-S",  # no site: the virtualenv's .pth files are code, and this runs as root
            "-m",
            "compileall",
            "-q",
            "-x",
            r"/(\.git|\.venv|node_modules)/",
            spec.working_directory,
        ],
        check=False,
        umask=0o022,  # the service, another user, must read the caches whatever root's umask
    )
    if result.returncode != 0:
        report.notes.append(f"byte-compiling {spec.working_directory} failed: the app still runs")


def install(spec: AppSpec, target: InstallTarget) -> InstallReport:
    """Write ``spec``'s units and resolved description; reload and enable unless told not to."""
    report = InstallReport()
    old = read_manifest(spec.name, target) or {"files": {}, "enable": []}
    description = target.state_dir() / f"{spec.name}.toml"
    environment = _allowed(spec.name, target).environment if spec.environment else None
    unit_dir = target.unit_dir()
    env_path = None if environment is None else str(environment)
    options = RenderOptions(str(description), user_mode=target.user, environment_path=env_path)
    units = render_units(spec, options)
    # The service reads the resolved description; the values it needs come from NAME.env.
    files = {description: spec_to_toml(dataclasses.replace(spec, environment=())).encode()}
    if environment is not None:
        files[environment] = environment_file_text(spec).encode()
    files.update({unit_dir / fname: text.encode() for fname, text in units.items()})

    if target.root is None and not target.user:
        check_reachable(spec)  # a unit that could never start is refused before any write
        check_install_keeps_workers(spec)
    if target.root is None and spec.tls is not None and spec.tls.acme is not None:
        _acme_placeholder(spec.tls, report)
    if target.root is None:
        # With --root the units are for an image or package: the app is not on this machine.
        report.warnings += check_preflight(spec).warnings
    for live in files:  # refuse before writing anything
        disk = target.on_disk(live)
        if os.path.lexists(disk) and not target.force and not _is_ours(disk, {}):
            raise InstallError(
                f"{disk} exists and was not written by cpsysd",
                "move it away, or pass --force to replace it",
            )
    writes = {}
    for live, data in files.items():
        disk = target.on_disk(live)
        current = _current(disk)
        # A private file with the right content but a wider mode (an older install, a hand
        # edit) is written again: the mode is part of what install promises.
        widened = _mode(live) == PRIVATE_MODE and current is not None and _wider(disk)
        changed = current != data or widened
        (report.written if changed else report.unchanged).append(str(disk))
        if changed:
            writes[live] = data
    removes = [
        PurePosixPath(live)
        for live in old["files"]
        if PurePosixPath(live) not in files and _is_ours(target.on_disk(PurePosixPath(live)), {})
    ]
    enable = units_to_enable(spec)
    manifest = {
        "format": MANIFEST_FORMAT,
        "name": spec.name,
        "user": target.user,
        "files": {str(live): _sha256(data) for live, data in files.items()},
        "enable": enable,
        "stop": [f"{spec.name}.service"],
    }
    live_manager = target.manager_reachable()
    dropped = [unit for unit in old["enable"] if unit not in enable]
    if live_manager and dropped:
        systemctl("disable", "--now", *dropped, user=target.user)
    if writes or removes or old.get("files") != manifest["files"]:
        _transaction(spec.name, target, writes, removes, manifest)
    report.removed = [str(target.on_disk(p)) for p in removes]

    if target.root is None:
        _precompile(spec, report)
    if not live_manager:
        if target.root is None:
            report.notes.append(
                "systemd is not running here: units written, nothing enabled or started"
            )
        return report
    if writes or removes:
        systemctl("daemon-reload", user=target.user)
    if target.start:
        systemctl("enable", "--now", *enable, user=target.user)
        report.enabled = enable
        _first_acme_issuance(spec, target, report)
        service = unit_dir / f"{spec.name}.service"
        if service in writes and str(service) in old["files"]:
            # The running service keeps its old definition until restarted; its sockets stay
            # open meanwhile, so clients wait rather than fail.
            systemctl("try-restart", f"{spec.name}.service", user=target.user)
            report.notes.append(f"{spec.name}.service changed: restarted it if it was running")
    return report


def _acme_placeholder(tls: TLSConfig, report: InstallReport) -> None:
    """No certificate yet: a self-signed placeholder, so the app can start and answer the CA."""
    from cpsysd.host.acmerenew import write_placeholder
    from cpsysd.host.renewkeys import _passphrases

    if write_placeholder(tls, _passphrases(tls)[0]):
        report.notes.append(f"{tls.cert}: a self-signed placeholder until {tls.acme} issues")


def _first_acme_issuance(spec: AppSpec, target: InstallTarget, report: InstallReport) -> None:
    """Run the renewal job once now (the first issuance), through systemd: its sandbox, its
    RuntimeDirectory for the answers. A failure is reported, not fatal: the units are in place,
    the placeholder serves, and the timer retries with backoff."""
    names = renew_unit_names(spec)
    if names is None or spec.tls is None or spec.tls.acme is None:
        return
    try:
        systemctl("start", names[1], user=target.user)
    except CpsysdError as err:
        report.notes.append(
            f"first certificate from {spec.tls.acme} failed ({err.message}): the timer retries; "
            f"see journalctl -u {names[1]}"
        )
    else:
        report.notes.append(f"{names[1]}: certificate from {spec.tls.acme} in place")


def _prune_empty(target: InstallTarget) -> None:
    """Remove the state directory once no app is left in it; under ``--root`` also the empty
    directories install created, so a package build tree is left as it was."""
    candidates = [target.on_disk(target.state_dir())]
    if target.root is not None:
        candidates.append(target.on_disk(target.unit_dir()))
    for directory in candidates:
        while directory != target.root and directory != directory.parent:
            try:
                directory.rmdir()
            except OSError:
                break
            directory = directory.parent
            if target.root is None:
                break


def _loaded(unit: str, user: bool) -> bool:
    return systemctl("show", "-P", "LoadState", unit, user=user).stdout.strip() == "loaded"


def uninstall(name: str, target: InstallTarget, purge_releases: bool = False) -> InstallReport:
    """Stop, disable and remove exactly what :func:`install` wrote for ``name``, and what
    ``cpsysd deploy`` wrote (:func:`cpsysd.host.deploy.retire`; its releases with
    ``purge_releases``)."""
    report = InstallReport()
    try:
        escape.check_unit_stem(name)
    except ValueError as err:
        hint = "give the app's name, as in its cpsysd.toml"
        raise InstallError(f"{name!r} {err}", hint) from None
    old = read_manifest(name, target)
    manifest_path = _paths(name, target)[0]
    if old is None:
        raise InstallError(
            f"{name} is not installed here (no {manifest_path})",
            "check the name, --user and --root",
        )
    live_manager = target.manager_reachable()
    if target.root is None and not target.user:  # deploy is root's, on the running system
        report.removed += [str(path) for path in retire(name, purge=purge_releases)]
    if live_manager:
        # "stop" names NAME.service, which a workers app has no file for: stopping a unit that
        # is not loaded fails, and would fail the whole uninstall.
        stop = [unit for unit in old.get("stop", []) if _loaded(unit, target.user)]
        systemctl("disable", "--now", *old.get("enable", []), *stop, user=target.user)
    removes = []
    for live, digest in old["files"].items():
        disk = target.on_disk(PurePosixPath(live))
        if not os.path.lexists(disk):
            continue
        if _is_ours(disk, {str(disk): digest}):
            removes.append(PurePosixPath(live))
            report.removed.append(str(disk))
        else:
            report.notes.append(f"left {disk} alone: it was replaced by something else")
    _transaction(name, target, {}, removes, None)
    _prune_empty(target)
    if live_manager:
        systemctl("daemon-reload", user=target.user)
        systemctl("reset-failed", *old.get("stop", []), user=target.user, check=False)
    return report
