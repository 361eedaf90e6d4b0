"""One ACME job per certificate at a time: ``CERT.acme-lock``, a root-owned file held with
flock(2) for the whole job.

Two jobs at once (the timer's and a manual ``cpsysd cert renew``, or two manual ones) would both
order, and the stale-answer sweep at the start of one would delete the other's live challenge
answers, failing its validation. The lock is taken without waiting: the second job says in one
line that a renewal is already running and exits with 75 (EX_TEMPFAIL, sysexits.h). Non-zero,
because it did not do what it was asked (a manual run must not look like a renewal), and the
renewal service lists 75 in ``SuccessExitStatus=``, so a timer run that meets a manual one does
not leave the unit failed; the running job does the work either way.

The lock file sits beside ``CERT.acme-retry`` (a directory the renewal service may write) and is
never removed: removing a lock file races with a job that has just opened it. flock(2) locks
are released by the kernel when the holder exits, SIGKILL included, so no stale lock survives.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import stat
from collections.abc import Iterator
from pathlib import Path

from cpsysd.errors import TLSError

EX_TEMPFAIL = 75


class RenewalRunning(TLSError):
    """Another ACME job holds the certificate's lock."""

    exit_code = EX_TEMPFAIL


def lock_path(cert: str) -> Path:
    return Path(cert + ".acme-lock")


@contextlib.contextmanager
def renewal_lock(cert: str, unit: str) -> Iterator[None]:
    """Hold ``CERT.acme-lock`` for the block, or raise :class:`RenewalRunning` at once;
    ``unit`` is the renewal service named in the hint."""
    path = lock_path(cert)
    try:
        # O_NOFOLLOW: a link planted there must not make root create or lock another file.
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    except OSError as err:
        if err.errno == errno.ENOENT:  # what writing the certificate would have said
            raise TLSError(f"directory {path.parent} does not exist", "create it first") from None
        raise TLSError(
            f"cannot open the renewal lock {path}: {err.strerror}",
            "the certificate's directory must be root's and writable by the renewal job",
        ) from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_uid != os.geteuid():
            raise TLSError(
                f"the renewal lock {path} is not a file of this user (uid {info.st_uid})",
                "remove it; the certificate's directory must be writable by its owner only",
            )
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            if err.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise
            raise RenewalRunning(
                f"a renewal of {cert} is already running (it holds {path}); nothing done",
                f"it reports in journalctl -u {unit}, or wait and run this again",
            ) from None
        yield
    finally:
        os.close(fd)  # releases the lock
