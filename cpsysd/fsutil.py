"""Crash-safe file writes: a file is either its old or its new content, never a mix.

The new content goes to a temporary file in the same directory, created with its final mode
from the first byte (``os.open(..., O_CREAT | O_EXCL, mode)``: a private key is never readable
by others, not even for a moment), fsync-ed, then renamed over the target (rename(2) is atomic
within a file system) and the directory fsync-ed so the rename survives a power cut.

Two staging schemes share that one writer (:func:`_write_new`): :func:`stage` uses a
deterministic name per target (``cpsysd install`` finds and recovers it), :func:`stage_unique`
a name carrying the writer's PID (key and certificate files, which concurrent ``cpsysd cert``
runs may write; :func:`sweep_stale_staging` removes what killed writers left).
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import secrets
import stat
from pathlib import Path, PurePosixPath

from cpsysd.errors import CpsysdError

TEMP_SUFFIX = ".cpsysd-tmp"
_UNIQUE_STAGING = re.compile(r"\.(.+)\.([0-9]+)-[0-9a-f]{12}\.tmp")


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
    """Make renames, links and unlinks in ``directory`` durable (fsync(2) on the directory)."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
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


def _write_new(path: Path, data: bytes, mode: int) -> None:
    """Create ``path`` (never an existing file, never through a symlink) with ``mode`` from the
    first byte, write ``data`` and fsync it; on any failure nothing is left. Raises OSError."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | os.O_NOFOLLOW, mode)
    try:
        # A shared mode is set exactly, undoing the umask (services must read unit files). A
        # private one (a key: nothing for group or others) is never chmod-ed, so no syscall
        # ever touches a key's permissions: it keeps open(2)'s mode & ~umask, never wider.
        if mode & 0o077:
            os.fchmod(fd, mode)
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(path)
        raise
    os.close(fd)


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
        _write_new(temp, data, mode)
    except OSError as err:
        raise CpsysdError(_describe(err, target)) from None
    return temp


def stage_unique(target: Path, data: bytes, mode: int) -> Path:
    """Write ``data`` to a new staging file beside ``target`` whose hidden name carries this
    process's PID (``.NAME.PID-RANDOM.tmp``), with ``mode`` from the first byte, fsync-ed.
    Raises OSError, so that a caller publishing several files can undo all of them."""
    temp = target.with_name(f".{target.name}.{os.getpid()}-{secrets.token_hex(6)}.tmp")
    _write_new(temp, data, mode)
    return temp


def publish(temp: Path, target: Path, *, replace: bool) -> None:
    """Put the staged ``temp`` in place of ``target``: with ``replace`` by rename(2), atomically;
    without, by link(2), which fails with EEXIST rather than clobber a file that appeared
    meanwhile. The caller fsyncs the directory (:func:`fsync_dir`). Raises OSError."""
    if replace:
        os.replace(temp, target)
    else:
        os.link(temp, target)
        os.unlink(temp)


def _writer_gone(pid: int) -> bool:
    """True only when no process with ``pid`` exists (a reused PID keeps the file)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def sweep_stale_staging(target: Path) -> list[Path]:
    """Remove the :func:`stage_unique` files of ``target`` left by writers that were killed
    before they published or cleaned up (a SIGKILL runs no cleanup); return what was removed.

    Only files of this exact naming whose writing process no longer exists are touched: a
    concurrent writer's file is left alone. Such a file may hold an unpublished private key
    (mode 0600), so it should not linger."""
    removed: list[Path] = []
    try:
        entries = list(os.scandir(target.parent))
    except OSError:
        return removed
    for entry in entries:
        match = _UNIQUE_STAGING.fullmatch(entry.name)
        if not match or match.group(1) != target.name:
            continue
        if entry.is_file(follow_symlinks=False) and _writer_gone(int(match.group(2))):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(entry.path)
                removed.append(Path(entry.path))
    return removed


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


# --- trees cpsysd does not own: --root DIR, files someone else may have planted ---------------

SYMLINKS_MAX = 40  # the kernel's limit on symlinks in one resolution (path_resolution(7))


def resolve_in_root(root: Path, live: PurePosixPath) -> Path:
    """Where the running system's ``live`` is inside the tree ``root``, never outside it.

    Symlinks among the directories are followed as if ``root`` were ``/`` (an absolute target
    starts again at ``root``, ``..`` stops there), which is how openat2(2) ``RESOLVE_IN_ROOT``
    and systemd's own ``--root`` read an image (a merged-/usr tree's ``lib -> usr/lib`` works).
    The last component is not followed: a symlink there is the file itself, which the callers
    refuse to read (:func:`read_regular_file`) and replace or remove as a link.
    """
    *dirs, last = live.relative_to("/").parts or (".",)
    if last in (".", ".."):
        raise CpsysdError(f"{live} does not name a file")
    done: list[str] = []
    todo = list(dirs)
    links = 0
    while todo:
        part = todo.pop(0)
        if part in ("", "."):
            continue
        if part == "..":
            del done[-1:]
            continue
        here = root.joinpath(*done, part)
        try:
            info = os.lstat(here)
        except FileNotFoundError:
            done += [part, *todo]  # nothing below a missing directory can be a link yet
            break
        except OSError as err:
            raise CpsysdError(f"cannot look up {here}: {err.strerror}") from None
        if not stat.S_ISLNK(info.st_mode):
            done.append(part)
            continue
        links += 1
        if links > SYMLINKS_MAX:
            raise CpsysdError(f"too many symlinks under {root} on the way to {live}")
        target = PurePosixPath(os.readlink(here))
        if target.is_absolute():
            done = []
        todo = [*target.parts[1 if target.is_absolute() else 0 :], *todo]
    resolved = root.joinpath(*done, last)
    if ".." in done:  # a missing directory named '..' after it: never leave root that way
        raise CpsysdError(f"{live} climbs out of {root} with '..'")
    return resolved


def read_regular_file(path: Path, limit: int) -> bytes:
    """The content of ``path`` if it is a regular file of at most ``limit`` bytes.

    Opened with ``O_NOFOLLOW`` (a symlink in the last component is refused, not followed) and
    ``O_NONBLOCK`` (a FIFO cannot block the open), checked with fstat before one byte is read,
    and read only up to the limit (``/dev/zero``, procfs files lie about their size).
    FileNotFoundError passes through; everything else becomes a one-line CpsysdError.
    """
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        raise
    except OSError as err:
        if err.errno == errno.ELOOP:
            raise CpsysdError(f"{path} is a symlink, not a file") from None
        raise CpsysdError(f"cannot read {path}: {err.strerror}") from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise CpsysdError(f"{path} is not a regular file")
        chunks: list[bytes] = []
        size = 0
        while size <= limit:
            chunk = os.read(fd, limit + 1 - size)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    except OSError as err:
        raise CpsysdError(f"cannot read {path}: {err.strerror}") from None
    finally:
        os.close(fd)
    if size > limit:
        raise CpsysdError(f"{path} is larger than {limit} bytes")
    return b"".join(chunks)
