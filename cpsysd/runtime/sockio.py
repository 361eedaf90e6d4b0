"""Socket helpers of the request threads (cpsysd.runtime.server): the descriptor limit, a
lingering close, and how many bytes a connection has moved (the watchdog's progress)."""

from __future__ import annotations

import fcntl
import resource
import socket
import struct
import termios
import time
from typing import Any


def descriptor_limit() -> int:
    """The soft RLIMIT_NOFILE (systemd's LimitNOFILE=, 1024 unless set), getrlimit(2)."""
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    return 1024 if soft == resource.RLIM_INFINITY else int(soft)


LINGER_SECONDS = 1.0


def lingering_close(sock: socket.socket) -> None:
    """RFC 9112 section 9.6: a response refused before its body was read (413, 400, 431) must
    not be lost to the reset that closing with unread data sends (tcp(7)): send our FIN, then
    read and drop what the client still sends for at most LINGER_SECONDS, so it reads the answer
    first. Bounded in time, so a client that keeps sending cannot hold the thread."""
    deadline = time.monotonic() + LINGER_SECONDS
    try:
        sock.shutdown(socket.SHUT_WR)
        while (left := deadline - time.monotonic()) > 0:
            sock.settimeout(left)
            if not sock.recv(65536):
                break
    except OSError:  # the client is gone, or the time is up: the close follows
        pass


def bytes_moved(conn: Any) -> int:
    """What a request thread's connection has moved so far: what cheroot counted, plus what
    the kernel counts, since a response to a slow reader is written in one blocking send()
    that cheroot counts only when it returns."""
    moved = int(getattr(conn.rfile, "bytes_read", 0)) + int(getattr(conn.wfile, "bytes_written", 0))
    try:
        sock = conn.socket
        if sock.family == socket.AF_UNIX:
            # unix(7) SIOCOUTQ: bytes not yet read by the peer; it shrinks as the peer reads
            queued = fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, b"\0\0\0\0")
            return moved + int(struct.unpack("i", queued)[0])
        # struct tcp_info (linux/tcp.h, Linux >= 4.1): tcpi_bytes_acked and
        # tcpi_bytes_received, the u64s at offsets 120 and 128, grow while bytes move
        info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, _TCP_INFO_LENGTH)
        if len(info) >= _TCP_INFO_LENGTH:
            acked, received = struct.unpack_from("QQ", info, 120)
            moved += acked + received
    except (OSError, ValueError, AttributeError):
        pass
    return moved


_TCP_INFO_LENGTH = 136
