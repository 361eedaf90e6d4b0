"""Adopt the listening sockets systemd passes in, exactly as sd_listen_fds(3) describes.

The protocol: ``LISTEN_PID`` is the PID the sockets are meant for, ``LISTEN_FDS`` how many
descriptors were passed starting at fd 3 (``SD_LISTEN_FDS_START``), ``LISTEN_FDNAMES`` an optional
colon-separated list of names (``FileDescriptorName=``, systemd.socket(5)), one per descriptor.

Where cpsysd is stricter than libsystemd, and why:

- A ``LISTEN_PID`` of another process makes sd_listen_fds() return 0 ("nothing for you"). cpsysd
  refuses to start instead: someone meant to pass sockets (a wrapper that forked, usually), and
  binding the ports itself would only collide with the socket unit that holds them.
- Every descriptor must be an open, listening ``SOCK_STREAM`` socket of family AF_INET, AF_INET6
  or AF_UNIX; anything else (a pipe, a UDP socket, a connected socket from ``Accept=yes``) is
  refused with a message naming the fd, never served.
- The names must be as many as the descriptors (sd_listen_fds_with_names() fails with -EINVAL
  otherwise; cpsysd says which count is wrong).

Only once every check has passed does :func:`adopt_sockets` call
:func:`systemd.daemon.listen_fds_with_names`, which marks the descriptors close-on-exec and unsets
the variables, and drop them from :data:`os.environ` too (libsystemd's unsetenv() does not update
Python's copy, and :mod:`subprocess` hands that copy to children).
"""

from __future__ import annotations

import os
import socket
import stat
from typing import Any

from cpsysd.errors import ActivationError
from cpsysd.records import record

LISTEN_FDS_START = 3  # SD_LISTEN_FDS_START, sd-daemon.h
ACTIVATION_VARIABLES = ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES")
SUPPORTED_FAMILIES = (socket.AF_INET, socket.AF_INET6, socket.AF_UNIX)
_UNIT_HINT = "check the ListenStream= lines of the app's .socket unit(s)"


@record
class PassedSocket:
    """One adopted listening socket. ``name`` is its LISTEN_FDNAMES entry, None when systemd
    passed no names (e.g. ``systemd-socket-activate`` without ``--fdname``)."""

    fd: int
    name: str | None
    sock: socket.socket

    @property
    def family(self) -> socket.AddressFamily:
        return self.sock.family

    @property
    def address(self) -> str:
        """The bound address in ListenStream= notation, for messages and STATUS=."""
        return format_address(self.sock)

    def describe(self) -> str:
        named = f" ({self.name!r})" if self.name is not None else ""
        return f"fd {self.fd}{named} {self.address}"


def format_address(sock: socket.socket) -> str:
    """``127.0.0.1:80``, ``[::]:80``, ``/run/app.sock`` or ``@abstract`` for a bound socket."""
    name: Any = sock.getsockname()
    if sock.family == socket.AF_UNIX:
        if isinstance(name, bytes):  # abstract namespace (leading NUL) or undecodable path
            name = name.decode("utf-8", "backslashreplace")
        return "@" + name[1:] if name.startswith("\0") else str(name)
    host, port = name[0], name[1]
    return f"[{host}]:{port}" if sock.family == socket.AF_INET6 else f"{host}:{port}"


def activation_requested() -> bool:
    """True when any LISTEN_* variable is set: then sockets must be adopted, never bound."""
    return any(var in os.environ for var in ACTIVATION_VARIABLES)


def _is_number(text: str) -> bool:
    # At most 19 digits, like libsystemd's 64-bit parsers (and far below int()'s 4300-digit cap).
    return text.isascii() and text.isdigit() and len(text) <= 19


def _shown(text: str) -> str:
    return repr(text if len(text) <= 40 else text[:40] + "...")


def _parse_environment() -> tuple[int, list[str] | None]:
    """Validate LISTEN_PID/LISTEN_FDS/LISTEN_FDNAMES; return (count, names or None)."""
    pid_text = os.environ.get("LISTEN_PID")
    fds_text = os.environ.get("LISTEN_FDS")
    names_text = os.environ.get("LISTEN_FDNAMES")
    if pid_text is None or fds_text is None:
        present = ", ".join(var for var in ACTIVATION_VARIABLES if var in os.environ)
        raise ActivationError(
            f"incomplete socket activation environment: only {present} is set",
            "systemd sets LISTEN_PID and LISTEN_FDS together; unset the stray variable",
        )
    if not _is_number(pid_text):
        raise ActivationError(f"LISTEN_PID={_shown(pid_text)} is not a process id")
    if int(pid_text) != os.getpid():
        raise ActivationError(
            f"LISTEN_PID={pid_text} is not this process (pid {os.getpid()}): "
            "the sockets were passed to another process",
            "run cpsysd serve directly from ExecStart= (a wrapper that forks changes the pid)",
        )
    if not _is_number(fds_text):
        raise ActivationError(f"LISTEN_FDS={_shown(fds_text)} is not a number", _UNIT_HINT)
    count = int(fds_text)
    if count == 0:
        raise ActivationError("LISTEN_FDS=0: systemd passed no sockets", _UNIT_HINT)
    names = None if names_text is None else names_text.split(":")
    if names is not None and len(names) != count:
        raise ActivationError(
            f"LISTEN_FDNAMES has {len(names)} name(s) for LISTEN_FDS={count}",
            "every passed socket needs one name (FileDescriptorName=)",
        )
    return count, names


def _kind_of_fd(mode: int) -> str:
    for test, kind in (
        (stat.S_ISFIFO, "a pipe"),
        (stat.S_ISREG, "a regular file"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISDIR, "a directory"),
    ):
        if test(mode):
            return kind
    return "not a socket"


def _check_descriptor(fd: int, label: str) -> None:
    """Raise unless ``fd`` is an open, listening stream socket of a supported family."""
    from systemd import daemon

    try:
        mode = os.fstat(fd).st_mode
    except OSError:
        raise ActivationError(
            f"{label} is not open: LISTEN_FDS is larger than the descriptors passed", _UNIT_HINT
        ) from None
    if not stat.S_ISSOCK(mode):
        raise ActivationError(f"{label} is {_kind_of_fd(mode)}, not a socket", _UNIT_HINT)
    if daemon.is_socket(fd, socket.AF_UNSPEC, socket.SOCK_STREAM, 1):
        probe = socket.socket(fileno=fd)  # learns the real family (never guess it)
        family = probe.family
        probe.detach()  # leave the descriptor alone until every check has passed
        if family not in SUPPORTED_FAMILIES:
            raise ActivationError(
                f"{label} is a {family.name} socket",
                "cpsysd serves AF_INET, AF_INET6 and AF_UNIX stream sockets",
            )
        return
    probe = socket.socket(fileno=fd)
    try:
        kind, family = probe.type, probe.family
    finally:
        probe.detach()
    if kind != socket.SOCK_STREAM:
        what = "UDP" if family in (socket.AF_INET, socket.AF_INET6) else kind.name
        raise ActivationError(
            f"{label} is a {what} socket, not a stream socket",
            "use ListenStream=, not ListenDatagram=",
        )
    raise ActivationError(
        f"{label} is a stream socket that is not listening",
        "the .socket unit needs Accept=no (the default)",
    )


def adopt_sockets() -> list[PassedSocket] | None:
    """The sockets systemd passed, validated, close-on-exec, variables unset; None when no
    LISTEN_* variable is set (then the caller binds its listeners itself).

    Raises :class:`~cpsysd.errors.ActivationError` for any unusable environment, before touching
    a single descriptor.
    """
    if not activation_requested():
        return None
    count, names = _parse_environment()
    for index in range(count):
        fd = LISTEN_FDS_START + index
        name = f" ({names[index]!r})" if names is not None else ""
        _check_descriptor(fd, f"fd {fd}{name}")

    from systemd import daemon

    try:
        passed = daemon.listen_fds_with_names(unset_environment=True)
    except OSError as err:  # cannot happen after the checks above, short of a race
        raise ActivationError(f"sd_listen_fds_with_names() failed: {err}") from None
    for var in ACTIVATION_VARIABLES:
        os.environ.pop(var, None)
    if len(passed) != count:
        raise ActivationError(f"libsystemd saw {len(passed)} sockets, LISTEN_FDS said {count}")
    adopted = []
    for index in range(count):
        fd = LISTEN_FDS_START + index
        adopted.append(
            PassedSocket(fd, names[index] if names is not None else None, socket.socket(fileno=fd))
        )
    return adopted
