"""Releases on disk: building one, listing them, which is live, the deploy lock, pruning.

``RELEASES/NAME/`` (:data:`cpsysd.render.releases.RELEASES_DIR`) holds, root-owned and not
writable by the service (ProtectSystem=strict makes it read-only to it anyway):

- ``rN/app/``: a copy of the description's ``working_directory`` (``__pycache__`` and ``.git``
  left out); ``rN/venv/``: a virtualenv made from the description's ``python``, which sees that
  interpreter's packages through a ``.pth`` file and, when the app brings a
  ``requirements.txt``, has them installed on top (the release's own win); ``rN/cpsysd.toml``:
  the description with its paths pointed into the release; ``rN/release.json``, written last:
  a release without it is an interrupted build and is never started.
- ``state.json``: the live release, the one before it (``rollback``'s target) and the last
  number given, so a release number is never reused (its journal is its own).
- ``.lock``: ``flock(2)``-ed by the one deploy or rollback running, with its PID.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import logging
import os
import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from cpsysd import fsutil
from cpsysd.description.load import AppSpec
from cpsysd.description.toml import spec_to_toml
from cpsysd.errors import CommandError, CpsysdError
from cpsysd.host.preflight import check_preflight
from cpsysd.host.run import run_command
from cpsysd.render.releases import RELEASE_DESCRIPTION

RELEASE_FILE = "release.json"
STATE_FILE = "state.json"
REQUIREMENTS = "requirements.txt"
STATE_READ_MAX = 1 << 16
PIP_TIMEOUT = 900.0  # seconds for building a release's dependencies
_LEFT_OUT = shutil.ignore_patterns("__pycache__", "*.pyc", ".git", ".venv")
# The description interpreter's package directories, for the release venv's .pth file.
_ASK_SITE = (
    "import json, sys; print(json.dumps([p for p in sys.path "
    "if p.endswith(('site-packages', 'dist-packages'))]))"
)


@dataclass(frozen=True)
class Release:
    """One built release: its id (``rN``), when and from which directory it was made."""

    id: str
    created: str  # ISO 8601, UTC
    source: str  # the working_directory it was copied from
    requirements: bool  # it installed a requirements.txt of its own

    @property
    def number(self) -> int:
        return int(self.id[1:])


@dataclass(frozen=True)
class LiveState:
    """``state.json``: the live release, the previous one, the last number given."""

    live: str | None = None
    previous: str | None = None
    last_number: int = 0


def read_state(app_dir: Path) -> LiveState:
    try:
        data = json.loads(fsutil.read_regular_file(app_dir / STATE_FILE, STATE_READ_MAX))
        return LiveState(data.get("live"), data.get("previous"), int(data.get("last_number", 0)))
    except FileNotFoundError:
        return LiveState()
    except (ValueError, TypeError, AttributeError) as err:
        raise CpsysdError(
            f"{app_dir / STATE_FILE} is unreadable: {err}",
            "restore it, or write {} to it and deploy again",
        ) from None


def write_state(app_dir: Path, state: LiveState) -> None:
    fsutil.atomic_write(app_dir / STATE_FILE, json.dumps(dataclasses.asdict(state)).encode())


def read_release(directory: Path) -> Release | None:
    """The release in ``directory``, or None for an interrupted build or anything else."""
    try:
        data = json.loads(fsutil.read_regular_file(directory / RELEASE_FILE, STATE_READ_MAX))
        return Release(data["id"], data["created"], data["source"], bool(data["requirements"]))
    except (OSError, CpsysdError, ValueError, KeyError, TypeError):
        return None


def list_releases(app_dir: Path) -> list[Release]:
    """Every complete release of the app, oldest first."""
    found = []
    if app_dir.is_dir():
        for entry in app_dir.iterdir():
            if entry.name[:1] == "r" and entry.name[1:].isdigit():
                release = read_release(entry)
                if release is not None and release.id == entry.name:
                    found.append(release)
    return sorted(found, key=lambda release: release.number)


@contextlib.contextmanager
def deploy_lock(app_dir: Path, name: str) -> Iterator[None]:
    """Hold ``app_dir/.lock`` for one deploy or rollback; a second one is refused at once."""
    fd = os.open(app_dir / ".lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            raise CpsysdError(
                f"another deploy or rollback of {name} is running (pid {holder})",
                "wait for it to finish, then run the command again",
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)  # releases the lock


def _read_only_for_others(tree: Path) -> None:
    """Directories 0755, files 0644 (0755 when executable): the service reads, never writes."""
    for directory, _dirnames, filenames in os.walk(tree):
        os.chmod(directory, 0o755)  # noqa: S103 - the service (another uid) reads the code
        for filename in filenames:
            path = Path(directory, filename)
            if not path.is_symlink():
                path.chmod(0o755 if path.stat().st_mode & 0o100 else 0o644)


def _make_venv(spec: AppSpec, release_dir: Path, with_pip: bool) -> Path:
    venv = release_dir / "venv"
    run_command([spec.python, "-m", "venv", *([] if with_pip else ["--without-pip"]), str(venv)])
    sites = json.loads(run_command([spec.python, "-I", "-c", _ASK_SITE]).stdout)
    own = next(venv.glob("lib/python*/site-packages"))
    # After the venv's own site-packages on sys.path: a package the release installs wins.
    (own / "_cpsysd_base.pth").write_text("".join(f"{site}\n" for site in sites))
    return venv / "bin" / "python"


def release_spec(spec: AppSpec, release_dir: Path) -> AppSpec:
    """``spec`` with its code, interpreter and (when inside the code) config in the release."""
    app = release_dir / "app"
    config = spec.config
    if config is not None and Path(config).is_relative_to(spec.working_directory):
        config = str(app / Path(config).relative_to(spec.working_directory))
    return dataclasses.replace(
        spec,
        working_directory=str(app),
        python=str(release_dir / "venv" / "bin" / "python"),
        config=config,
        source=str(release_dir / RELEASE_DESCRIPTION),
    )


def build_release(spec: AppSpec, app_dir: Path, release_id: str) -> Release:
    """Copy the app, make its venv (install its requirements.txt), write its description and
    preflight it in its own interpreter. Any failure removes the half-built release and
    raises; nothing else is touched (the live release lives in its own directory)."""
    release_dir = app_dir / release_id
    # With --debug: when the build began (bench/deploywait.py charges slow requests to phases).
    logging.getLogger("cpsysd.command").debug("building release %s", release_id)
    try:
        release_dir.mkdir(mode=0o755)
        shutil.copytree(spec.working_directory, release_dir / "app", symlinks=True,
                        ignore=_LEFT_OUT)  # fmt: skip
        requirements = (release_dir / "app" / REQUIREMENTS).is_file()
        python = _make_venv(spec, release_dir, requirements)
        if requirements:
            requirement_file = str(release_dir / "app" / REQUIREMENTS)
            run_command([str(python), "-m", "pip", "install", "--no-input",
                         "--disable-pip-version-check", "-r", requirement_file],
                        timeout=PIP_TIMEOUT)  # fmt: skip
        built = release_spec(spec, release_dir)
        (release_dir / RELEASE_DESCRIPTION).write_text(spec_to_toml(built))
        _read_only_for_others(release_dir)
        check_preflight(built)
        release = Release(
            release_id, datetime.now(UTC).isoformat(timespec="seconds"),
            spec.working_directory, requirements,
        )  # fmt: skip
        data = json.dumps(dataclasses.asdict(release)).encode()
        fsutil.atomic_write(release_dir / RELEASE_FILE, data)
        return release
    except OSError as err:
        remove_release(app_dir, release_id)
        raise CpsysdError(
            f"building release {release_id} failed: {_os_problem(err)}",
            "free space or fix the permissions under the releases directory; "
            "the live release was not touched",
        ) from None
    except CommandError as err:
        remove_release(app_dir, release_id)
        raise CpsysdError(
            f"building release {release_id} failed: {err.message}",
            "fix the app's requirements.txt; the live release was not touched",
        ) from None
    except CpsysdError as err:
        remove_release(app_dir, release_id)
        raise CpsysdError(
            f"release {release_id} is not the app: {err.message}",
            f"{err.hint or 'fix the app'}; the live release was not touched",
        ) from None


def _os_problem(err: OSError) -> str:
    """One line for ``err``; copytree gathers its failures into one shutil.Error."""
    if isinstance(err, shutil.Error) and err.args and isinstance(err.args[0], list):
        _source, target, why = err.args[0][0]
        reason = re.sub(r"^\[Errno \d+\] ", "", str(why)).split(":")[0]
        return f"{reason} ({target})"
    return f"{err.strerror or err} ({err.filename})"


def remove_release(app_dir: Path, release_id: str) -> None:
    shutil.rmtree(app_dir / release_id, ignore_errors=True)


def prune(app_dir: Path, keep: int, protect: set[str]) -> list[str]:
    """Remove the oldest releases beyond ``keep``, never one in ``protect``; their ids."""
    releases = [release.id for release in list_releases(app_dir)]
    removable = [rid for rid in releases[: max(0, len(releases) - keep)] if rid not in protect]
    for rid in removable:
        remove_release(app_dir, rid)
    return removable
