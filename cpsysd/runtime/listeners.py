"""Pair listening sockets with the listeners of the app description.

Under socket activation the sockets come from systemd (:mod:`cpsysd.runtime.adopt`) and are
matched to the described listeners: by name first (``FileDescriptorName=``, one socket unit per
name), then by address. A socket's name decides whether it serves TLS, because the name is what
the unit generator wrote from the description. Every described listener must get a socket and
every passed socket must be served, otherwise the start fails: a socket nobody serves would leave
its clients hanging.

Without socket activation :func:`bind_listeners` binds the listeners the way systemd would
(dual-stack for a bare port, ``Backlog=1024``, ``SocketMode=0666`` for unix sockets, and for the
instances of a ``worker_mode = "reuseport"`` app ``ReusePort=yes``).
"""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import os
import socket
import stat
from collections.abc import Iterable, Sequence
from dataclasses import field

from cpsysd.description.load import Listener
from cpsysd.errors import ActivationError, CpsysdError
from cpsysd.records import record
from cpsysd.runtime.adopt import PassedSocket, format_address

BACKLOG = 1024  # what the generated socket units set (Backlog=); systemd's default is 4096
_ANY = {"::", "0.0.0.0"}


@record
class Binding:
    """A listener of the description and the listening socket that serves it."""

    listener: Listener
    sock: socket.socket
    adopted: bool  # True: passed by systemd; False: bound by cpsysd serve itself
    fd_name: str | None = None
    # Where the socket is bound, ListenStream= notation; kept for messages after it is closed.
    address: str = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "address", format_address(self.sock))

    @property
    def tls(self) -> bool:
        return self.listener.tls

    @property
    def url(self) -> str:
        """Where it serves, for STATUS= and the log: ``http://[::]:8080``, ``unix:/run/x.sock``."""
        if self.sock.family == socket.AF_UNIX:
            return ("https+unix:" if self.tls else "unix:") + self.address
        return ("https://" if self.tls else "http://") + self.address


def tune_listener(sock: socket.socket) -> None:
    """TCP_NODELAY on TCP listeners: Linux copies it to every accepted connection, and without it
    each keep-alive response waits ~40 ms for Nagle's algorithm (tcp(7)); measured here as 23
    instead of ~1,900 requests/s on one connection. The socket units also say NoDelay=yes."""
    if sock.family in (socket.AF_INET, socket.AF_INET6):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def listener_matches(listener: Listener, sock: socket.socket) -> bool:
    """Whether ``sock`` is bound where ``listener`` says (what ListenStream= would bind)."""
    if sock.family == socket.AF_UNIX:
        return listener.is_unix and format_address(sock) == listener.path
    if listener.is_unix:
        return False
    host, port = sock.getsockname()[:2]
    if port != listener.port:
        return False
    if listener.host is None:
        return host in _ANY
    return ipaddress.ip_address(host) == ipaddress.ip_address(listener.host)


def _by_name(passed: PassedSocket, remaining: list[Listener]) -> Listener | None:
    group = [listener for listener in remaining if listener.name == passed.name]
    exact = next((listener for listener in group if listener_matches(listener, passed.sock)), None)
    if exact is not None:
        return exact
    # Same name, other address: e.g. instance N of a `worker_mode = "ports"` app listens on
    # port + N - 1. The name is what decides; only unix vs TCP has to agree.
    is_unix = passed.family == socket.AF_UNIX
    return next((listener for listener in group if listener.is_unix == is_unix), None)


def _describe(items: Iterable[str]) -> str:
    return ", ".join(items) or "none"


def match_passed_sockets(
    passed: Sequence[PassedSocket], listeners: Sequence[Listener]
) -> list[Binding]:
    """Pair every passed socket with a described listener; raise
    :class:`~cpsysd.errors.ActivationError` when one side has no partner."""
    remaining = list(listeners)
    bindings: list[Binding] = []
    unnamed: list[PassedSocket] = []
    for item in passed:
        chosen = _by_name(item, remaining) if item.name is not None else None
        if chosen is None:
            unnamed.append(item)
            continue
        remaining.remove(chosen)
        bindings.append(Binding(chosen, item.sock, adopted=True, fd_name=item.name))
    for item in unnamed:
        chosen = next(
            (listener for listener in remaining if listener_matches(listener, item.sock)), None
        )
        if chosen is None:
            wanted = _describe(f"{lst.address} ({lst.name!r})" for lst in listeners)
            raise ActivationError(
                f"systemd passed {item.describe()}, which matches no listener "
                f"of the description ({wanted})",
                "make the socket unit and the description agree: run cpsysd install again",
            )
        remaining.remove(chosen)
        bindings.append(Binding(chosen, item.sock, adopted=True, fd_name=item.name))
    if remaining:
        missing = remaining[0]
        got = _describe(item.describe() for item in passed)
        raise ActivationError(
            f"listener {missing.address} ({missing.name!r}) is in the description "
            f"but systemd did not pass it (got {got})",
            "run cpsysd install again, then systemctl restart the app's .socket unit(s)",
        )
    for binding in bindings:
        tune_listener(binding.sock)
    return bindings


def _remove_stale_unix_socket(path: str) -> None:
    """Remove a socket file left by a previous run; refuse to touch anything else."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise CpsysdError(
            f"cannot listen on {path}: it exists and is not a socket",
            "remove it or choose another path",
        )
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        try:
            probe.connect(path)
        except ConnectionRefusedError:
            os.unlink(path)  # nobody listens: stale
            return
        except OSError:
            return  # let bind() report what is wrong
    raise CpsysdError(f"cannot listen on {path}: another process is serving it", "stop it first")


def _bind_unix(path: str) -> socket.socket:
    _remove_stale_unix_socket(path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(path)
        os.chmod(path, 0o666)  # noqa: S103 - as the generated socket unit's SocketMode=0666
    except BaseException:
        sock.close()
        raise
    return sock


def _bind_tcp(host: str | None, port: int, reuse_port: bool) -> socket.socket:
    if host is None:
        # A bare port: one dual-stack IPv6 socket, like systemd's ListenStream=PORT
        # (BindIPv6Only=default); IPv4 only on hosts without IPv6.
        try:
            sock = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
        except OSError as err:
            if err.errno != errno.EAFNOSUPPORT:
                raise
            family, host = socket.AF_INET, "0.0.0.0"
        else:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
            return _bind_inet(sock, "::", port, reuse_port)
    else:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
    return _bind_inet(socket.socket(family, socket.SOCK_STREAM), host, port, reuse_port)


def _bind_inet(sock: socket.socket, host: str, port: int, reuse_port: bool) -> socket.socket:
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            # Before bind(): every socket sharing the port needs it, and the same effective
            # UID (socket(7)); then the kernel spreads new connections among them.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
    except BaseException:
        sock.close()
        raise
    return sock


def _bind_error(listener: Listener, err: OSError) -> CpsysdError:
    """One line saying why ``listener`` could not be bound, with the fix for that cause."""
    said = f"cannot listen on {listener.address}: {err.strerror or err}"
    if err.errno == errno.EADDRINUSE:
        return CpsysdError(said, "is another process listening there? stop it or change listen")
    lowest = _unprivileged_port_start()
    if err.errno == errno.EACCES and listener.port is not None and listener.port < lowest:
        # Not another process: below net.ipv4.ip_unprivileged_port_start only a process with
        # CAP_NET_BIND_SERVICE may bind (ip(7)); systemd has it when it binds the socket units.
        return CpsysdError(
            f"{said}: ports below {lowest} need root",
            "use socket activation, where systemd binds it: cpsysd install; or a port >= "
            f"{lowest}; or start cpsysd serve as root with --user NAME to drop privileges",
        )
    return CpsysdError(said, "check the address, or change listen")


def _unprivileged_port_start() -> int:
    try:
        with open("/proc/sys/net/ipv4/ip_unprivileged_port_start", encoding="ascii") as file:
            return int(file.read())
    except (OSError, ValueError):
        return 1024  # the kernel's default, and the fixed rule before Linux 4.11


def bind_listeners(listeners: Sequence[Listener], reuse_port: bool = False) -> list[Binding]:
    """Bind and listen on every described listener (no socket activation); ``reuse_port`` sets
    SO_REUSEPORT on the TCP ones so other processes may bind them too. On failure the sockets
    bound so far are closed and a :class:`~cpsysd.errors.CpsysdError` names the address."""
    bindings: list[Binding] = []
    try:
        for listener in listeners:
            try:
                if listener.path is not None:
                    sock = _bind_unix(listener.path)
                else:
                    sock = _bind_tcp(listener.host, listener.port or 0, reuse_port)
                sock.listen(BACKLOG)
            except OSError as err:
                raise _bind_error(listener, err) from None
            tune_listener(sock)
            bindings.append(Binding(listener, sock, adopted=False))
    except BaseException:
        close_bindings(bindings)
        raise
    return bindings


def close_bindings(bindings: Sequence[Binding]) -> None:
    """Close the sockets; remove the unix socket files cpsysd created itself (as systemd's
    RemoveOnStop=yes would). Sockets systemd passed are only closed: systemd keeps its copy."""
    for binding in bindings:
        if not binding.adopted and binding.listener.path is not None:
            with contextlib.suppress(OSError):
                os.unlink(binding.listener.path)
        binding.sock.close()
