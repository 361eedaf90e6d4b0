"""Slow clients wait in the selector thread, never in a request thread.

cheroot hands a connection to its worker pool as soon as it is accepted (or, kept alive, as soon
as it is readable), and the worker then reads the request line and headers with blocking reads
of up to ``socket_timeout`` (10 s) each. Measured: 10 connections that send nothing, or a header
line every 2 s, hold all 10 workers, every other request waits behind them in an unbounded
queue, and the watchdog sees no free worker and has systemd abort the service.

:class:`GatedConnections` is cheroot's connection manager (with the EMFILE back-off of
accepting.py) where a connection reaches the pool only once its whole header block is there:
the selector thread reads whatever has arrived with non-blocking ``recv()`` into a buffer per
connection and waits on the socket again until the empty line that ends the header block
(RFC 9112 section 2.1) has come. The block gets :data:`HEADER_DEADLINE` seconds in all, however
it is trickled (nginx's ``client_header_timeout`` works the same way); past it the client gets
408 and the connection is closed. The buffered bytes are then put in front of the connection's
read buffer, where cheroot's parser finds them without a blocking read.

The wait for a worker is bounded as well (:func:`dispatch`): a request that finds
``accepted_queue_size`` requests already queued, or that waited ``accepted_queue_timeout``
seconds for a worker, is answered 503 with ``Retry-After`` and its connection closed, instead of
making every later request wait longer.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import ssl
import time
from typing import Any

from cpsysd.runtime.accepting import BackoffConnections

# The whole request line plus header block, from the first byte (or the accept) to its end.
HEADER_DEADLINE = 10.0
# Read at most this much of a header block when the app sets no max_request_header_size.
HEADER_CAP = 1024 * 1024
# A handshake still open at a stop: its client's Finished is normally in flight already.
STOP_HANDSHAKE_TIMEOUT = 1.0
RETRY_AFTER = 1  # seconds, in the 503's Retry-After (RFC 9110 section 10.2.3)
_END = b"\r\n\r\n"
# A request line starts with a method, a token (RFC 9110 sections 5.6.2 and 9.1), and a space.
_REQUEST_START = re.compile(rb"[!#$%&'*+.^_`|~0-9A-Za-z-]{0,32}(?: |\Z)")
_PIECE = 65536


def _buffer_of(conn: Any) -> bytearray:
    head: bytearray | None = getattr(conn, "head", None)
    if head is None:
        head = conn.head = bytearray()
    return head


def _can_prepend(rfile: Any) -> bool:
    """cheroot's StreamReader (cheroot 9 and 11) is a ``_pyio.BufferedReader``, whose read
    buffer is ``_read_buf``/``_read_pos``; anything else is served the old way, unbuffered."""
    return isinstance(getattr(rfile, "_read_buf", None), bytes) and isinstance(
        getattr(rfile, "_read_pos", None), int
    )


def _take_buffered(rfile: Any, head: bytearray) -> None:
    """Move what the connection's reader already holds (a pipelined request) into ``head``."""
    with rfile._read_lock:
        head += rfile._read_buf[rfile._read_pos :]
        rfile._read_buf = b""
        rfile._read_pos = 0


def _give_back(rfile: Any, head: bytearray) -> None:
    with rfile._read_lock:
        rfile._read_buf = bytes(head) + rfile._read_buf[rfile._read_pos :]
        rfile._read_pos = 0
    head.clear()


def _plain_nonblocking(sock: Any) -> bool:
    """A plain socket whose descriptor is O_NONBLOCK already: Python sets it for any timeout
    (socket(2) ``settimeout``), and cheroot gives accepted sockets ``socket_timeout``."""
    return not isinstance(sock, ssl.SSLSocket) and sock.gettimeout() is not None


def _read_plain(fd: int, head: bytearray, cap: int) -> bool | None:
    """One ``read(2)`` on a non-blocking descriptor (more while pieces come full): no
    settimeout() ioctls and no poll() around it, unlike ``socket.recv`` on a socket with a
    timeout. True when something was read, None when nothing had arrived, False when the peer
    closed or the connection failed."""
    got = None
    while len(head) <= cap:
        try:
            data = os.read(fd, _PIECE)
        except BlockingIOError:
            return got
        except OSError:
            return False
        if not data:
            return False
        head += data
        got = True
        if len(data) < _PIECE:  # all there was for now; the selector says when more comes
            break
    return got


def _read_available(sock: Any, head: bytearray, cap: int, timeout: float) -> bool:
    """Append what has arrived (without waiting) to ``head``; False when the peer closed or
    the connection failed."""
    if _plain_nonblocking(sock):
        return _read_plain(sock.fileno(), head, cap) is not False
    sock.settimeout(0.0)
    try:
        while len(head) <= cap:
            try:
                data = sock.recv(_PIECE)
            except (BlockingIOError, ssl.SSLWantReadError, ssl.SSLWantWriteError):
                return True
            except OSError:
                return False
            if not data:
                return False
            head += data
        return True
    finally:
        with contextlib.suppress(OSError):
            sock.settimeout(timeout)


def answer_and_close(conn: Any, status: str, extra: str = "") -> None:
    """A short error response written without blocking (best effort), then the close."""
    body = status.split(" ", 1)[1].encode("ascii") + b"\n"
    response = (
        f"{conn.server.protocol} {status}\r\nContent-Length: {len(body)}\r\n"
        f"Content-Type: text/plain\r\n{extra}Connection: close\r\n\r\n"
    ).encode("ascii") + body
    try:
        conn.socket.settimeout(0.0)
        conn.socket.send(response)
    except (OSError, ValueError):
        pass
    conn.close()


def dispatch(server: Any, conn: Any) -> None:
    """Queue a connection whose header block is complete, or answer 503 when the queue is
    full. ``queued_at`` lets the worker refuse it when it waited too long (server.py)."""
    conn.queued_at = time.monotonic()
    if not server.requests.try_put(conn):
        server.refused += 1
        answer_and_close(conn, "503 Service Unavailable", f"Retry-After: {RETRY_AFTER}\r\n")


class GatedConnections(BackoffConnections):
    """cheroot's connection manager holding connections until their header block is complete;
    see the module docstring. ``heartbeat`` (time.monotonic()) shows the selector loop turns."""

    def __init__(self, server: Any) -> None:
        super().__init__(server)
        self.heartbeat = time.monotonic()
        self.cut = 0  # connections closed at the header deadline

    def put(self, conn: Any) -> None:
        """A kept-alive connection back from its worker (cheroot's put()). Under load its next
        request has often arrived already: then it is read here, in the worker, and the
        connection goes straight to the admission below, without the round trip through
        the selector thread (register, a wake-up, unregister: two epoll_ctl(2) calls, one
        epoll_wait(2) and a thread switch per request). Otherwise, or for TLS, as cheroot."""
        conn.last_used = time.time()
        if conn.rfile.has_data():
            self.server.process_conn(conn)
            return
        sock = conn.socket
        if _plain_nonblocking(sock) and _can_prepend(conn.rfile):
            head = _buffer_of(conn)
            limit = int(self.server.max_request_header_size or 0) or HEADER_CAP
            arrived = _read_plain(sock.fileno(), head, limit)
            if arrived is False:
                conn.close()
                return
            if arrived:
                conn.head_started = time.monotonic()
                self._examine(conn, head, 0, limit)
                return
        self._selector.register(sock.fileno(), 1, conn)  # selectors.EVENT_READ

    def admit(self, conn: Any) -> None:
        """A new connection, a kept-alive one that became readable, or one with buffered data:
        pass it to the pool once its header block is complete, else wait on its socket."""
        if getattr(conn, "head_started", None) is None:
            conn.head_started = time.monotonic()
        handshaking = isinstance(conn.socket, ssl.SSLSocket) and not getattr(conn, "tls_ready", 0)
        if handshaking and not self._handshake(conn):
            return
        rfile = conn.rfile
        if not _can_prepend(rfile):
            dispatch(self.server, conn)  # an unknown reader: cheroot's blocking way
            return
        head = _buffer_of(conn)
        seen = len(head)  # searched for the end already
        if rfile.has_data():
            _take_buffered(rfile, head)
        limit = int(self.server.max_request_header_size or 0) or HEADER_CAP
        if not _read_available(conn.socket, head, limit, float(self.server.timeout)):
            conn.close()
            return
        self._examine(conn, head, seen, limit)

    def _examine(self, conn: Any, head: bytearray, seen: int, limit: int) -> None:
        """To the pool if ``head`` holds a whole header block (searched from ``seen`` on),
        refused if it cannot be HTTP, else back to waiting on the socket."""
        rfile = conn.rfile
        while head.startswith(b"\r\n"):  # RFC 9112 2.2: ignore empty lines before a request
            del head[:2]
            seen = 0
        if not _REQUEST_START.match(head):
            # not HTTP at all (a TLS ClientHello on a plain port starts with 0x16): refused
            # now, as cheroot's parser would, instead of waiting for a header block
            answer_and_close(conn, "400 Bad Request")
            return
        if head.find(_END, max(0, seen - 3)) >= 0 or len(head) > limit:
            # too long: cheroot's parser finds the limit in the buffer and answers 413/414
            conn.head_started = None
            _give_back(rfile, head)
            dispatch(self.server, conn)
            return
        conn.last_used = time.time()  # the idle expiry below must not cut a header in progress
        self._selector.register(conn.socket.fileno(), 1, conn)  # selectors.EVENT_READ

    def close(self) -> None:
        """At a stop (after the selector loop ended): a connection whose request has begun —
        accepted and not yet answered, its header block partial or not sent yet — goes to the
        worker pool, which reads it the blocking way within the stop deadline, instead of being
        closed unanswered: its client connected before the stop and is owed an answer (an idle
        stop races new clients by design). A TLS connection still in its handshake is owed one
        too: under TLS 1.3 the client sends its request right after its Finished, before we
        read that, so closing it here loses a request the client already sent (seen: 1 or 2 of
        about 8,000 looping HTTPS requests across one restart). Its handshake is finished here,
        all of them within :data:`STOP_HANDSHAKE_TIMEOUT` (silent TLS clients must not hold the
        stop one after another). Idle kept-alive connections are closed as cheroot does."""
        handshakes_until = time.monotonic() + STOP_HANDSHAKE_TIMEOUT
        for fd, conn in list(self._selector.connections):
            if conn is self.server or getattr(conn, "head_started", None) is None:
                continue
            self._selector.unregister(fd)
            handshaking = isinstance(conn.socket, ssl.SSLSocket) and not getattr(
                conn, "tls_ready", 0
            )
            if handshaking and not self._finish_handshake(conn, handshakes_until):
                continue
            conn.head_started = None
            if _can_prepend(conn.rfile):
                _give_back(conn.rfile, _buffer_of(conn))
            with contextlib.suppress(OSError):
                conn.socket.settimeout(float(self.server.timeout))
            dispatch(self.server, conn)
        super().close()

    def _finish_handshake(self, conn: Any, until: float) -> bool:
        """At a stop: complete ``conn``'s handshake, blocking until ``until`` at most (then
        only with what has arrived already); closed when it fails. A tls-alpn-01 validation, or
        a ClientHello not yet read whole (alpn.py chooses the context from it), is closed: no
        request of its can have been sent."""
        peeking = getattr(self.server.ssl_adapter, "challenges", None) is not None
        if getattr(conn, "acme_tls", False) or (peeking and not getattr(conn, "hello_seen", 0)):
            conn.close()
            return False
        with contextlib.suppress(OSError):
            conn.socket.settimeout(max(until - time.monotonic(), 0.0))
        try:
            conn.socket.do_handshake()
        except (OSError, ValueError):
            conn.close()
            return False
        conn.tls_ready = True
        conn.ssl_env = self.server.ssl_adapter.get_environ(conn.socket)
        return True

    def _handshake(self, conn: Any) -> bool:
        """Advance a TLS handshake without blocking (tls.py leaves it to us); True once done.
        The header deadline covers it: a silent TLS client is cut like a silent one."""
        sock = conn.socket
        sock.settimeout(0.0)
        challenges = getattr(self.server.ssl_adapter, "challenges", None)
        if challenges is not None and not getattr(conn, "hello_seen", False):
            from cpsysd.runtime.alpn import choose_context

            chosen = choose_context(sock, challenges)
            if chosen is None:  # the peer closed before its ClientHello was complete
                conn.close()
                return False
            if not chosen:  # more of the ClientHello to come: wait for it
                conn.last_used = time.time()
                self._selector.register(sock.fileno(), 1, conn)  # selectors.EVENT_READ
                return False
            conn.hello_seen = True
            conn.acme_tls = chosen == "challenge"
        try:
            sock.do_handshake()
        except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
            conn.last_used = time.time()
            self._selector.register(sock.fileno(), 1, conn)  # selectors.EVENT_READ
            return False
        except (OSError, ValueError):
            conn.close()  # a failed handshake, or plain HTTP on a TLS port
            return False
        finally:
            with contextlib.suppress(OSError):
                sock.settimeout(float(self.server.timeout))
        if getattr(conn, "acme_tls", False):
            conn.close()  # RFC 8737 section 3: a tls-alpn-01 validation ends with its handshake
            return False
        conn.tls_ready = True
        conn.ssl_env = self.server.ssl_adapter.get_environ(sock)
        return True

    def _expire(self, threshold: float) -> None:
        # cheroot calls this about every expiration_interval (0.5 s) from its selector loop.
        now = time.monotonic()
        self.heartbeat = now
        late = [
            (fd, conn)
            for fd, conn in self._selector.connections
            if conn is not self.server
            and getattr(conn, "head_started", None) is not None
            and now - conn.head_started > HEADER_DEADLINE
        ]
        for fd, conn in late:
            self._selector.unregister(fd)
            self.cut += 1
            answer_and_close(conn, "408 Request Timeout")
        if late:
            self.server.error_log(
                f"{len(late)} connection(s) closed: header block not complete within "
                f"{HEADER_DEADLINE:g} s",
                level=logging.INFO,
            )
        super()._expire(threshold)  # type: ignore[misc]
