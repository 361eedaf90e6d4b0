"""Crash-safe file writes: a file is either its old or its new content, never a mix.

The new content goes to a temporary file in the same directory, created with its final mode
from the first byte (``os.open(..., O_CREAT | O_EXCL, mode)``: a private key is never readable
by others, not even for a moment), fsync-ed, then renamed over the target (rename(2) is atomic
within a file system) and the directory fsync-ed so the rename survives a power cut.
"""

from __future__ import annotations

import contextlib
import errno
import os
from pathlib import Path

from cpsysd.errors import CpsysdError

TEMP_SUFFIX = ".cpsysd-tmp"


def temp_path(target: Path) -> Path:
    """The staging file for ``target``: hidden, same directory, deterministic (for recovery)."""
    return target.with_name(f".{target.name}{TEMP_SUFFIX}")


def _describe(err: OSError, path: Path) -> str:
    if err.errno == errno.ENOSPC:
        return f"no space left on the device holding {path.parent}"
    if err.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return f"cannot write {path}: {err.strerror} (run as root, or choose another directory)"
    return f"cannot write {path}: {err.strerror or err}"


def fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def make_directories(directory: Path, mode: int = 0o755) -> list[Path]:
    """``mkdir -p`` whatever the umask: missing parents 0755, ``directory`` itself ``mode``.
    Root's umask on hardened hosts (027, 077) would otherwise make /var/lib/cpsysd unreadable
    for the services. Returns what it created, deepest last."""
    missing = [p for p in (directory, *directory.parents) if not p.exists()][::-1]
    for path in missing:
        _make_directory(path, mode if path == directory else 0o755)
    return missing


def _make_directory(path: Path, mode: int) -> None:
    """One directory with exactly ``mode``, never seen with another: made under a staging
    name, chmod-ed (mkdir's mode is narrowed by the umask), then renamed into place. A killed
    run leaves only the empty staging directory, which the next run replaces."""
    temp = path.with_name(f".{path.name}.cpsysd-tmp")
    with contextlib.suppress(FileNotFoundError):
        os.rmdir(temp)
    os.mkdir(temp, 0o700)
    try:
        os.chmod(temp, mode)
        os.rename(temp, path)
    except OSError:
        with contextlib.suppress(OSError):
            os.rmdir(temp)
        if not path.is_dir():  # made meanwhile by another cpsysd: theirs stands
            raise


def stage(target: Path, data: bytes, mode: int = 0o644) -> Path:
    """Write ``data`` to the staging file of ``target`` with ``mode`` and fsync it.

    A stale staging file from an interrupted run is replaced. Raises CpsysdError (ENOSPC and
    permission problems get a clear message); nothing is left behind on failure.
    """
    temp = temp_path(target)
    try:
        make_directories(target.parent)
        with contextlib.suppress(FileNotFoundError):
            temp.unlink()
        fd = os.open(
            temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | os.O_NOFOLLOW, mode
        )
        try:
            os.fchmod(fd, mode)  # the umask may have taken bits away; never adds any
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as err:
        with contextlib.suppress(OSError):
            temp.unlink()
        raise CpsysdError(_describe(err, target)) from None
    return temp


def commit(target: Path) -> None:
    """Rename the staging file of ``target`` over it and make the rename durable."""
    try:
        os.replace(temp_path(target), target)
        fsync_dir(target.parent)
    except OSError as err:
        raise CpsysdError(_describe(err, target)) from None


def atomic_write(target: Path, data: bytes, mode: int = 0o644) -> None:
    """Replace ``target`` with ``data`` atomically, created with ``mode`` from the first byte."""
    stage(target, data, mode)
    commit(target)


def remove(target: Path) -> bool:
    """Remove ``target`` if it exists (durably); True if it did."""
    try:
        target.unlink()
    except FileNotFoundError:
        return False
    except OSError as err:
        raise CpsysdError(f"cannot remove {target}: {err.strerror}") from None
    fsync_dir(target.parent)
    return True
