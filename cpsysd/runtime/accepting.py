"""Accepting connections when the process runs out of descriptors.

cheroot's selector loop re-raises EMFILE/ENFILE from accept(); its serve() loop logs the
traceback and selects again, and the listening socket, whose queued connection is still there,
is readable at once: measured 100% CPU and 5.3 MB/s of tracebacks in the journal while more
idle clients than RLIMIT_NOFILE (systemd's default soft limit is 1024) hold the descriptors.

:class:`BackoffConnections` stops watching the listening socket instead, for an interval that
doubles while accept() keeps failing (10 ms to 1 s), and logs one line when that starts and then
at most one a minute. Connections wait in the kernel's queue (systemd's Backlog=) meanwhile, as
they do behind a busy server, and are accepted as soon as descriptors are free again.
"""

from __future__ import annotations

import errno
import logging
import selectors
import time
from typing import Any

from cheroot import connections

# accept(2): the per-process or system-wide descriptor limit, or no memory for the socket
_OUT_OF_RESOURCES = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
FIRST_PAUSE = 0.01
LONGEST_PAUSE = 1.0
LOG_INTERVAL = 60.0


class BackoffConnections(connections.ConnectionManager):
    """cheroot's connection manager, pausing accept() while descriptors run out."""

    _selector: Any  # cheroot's private _ThreadsafeSelector, wrapped below

    def __init__(self, server: Any) -> None:
        super().__init__(server)
        self._pause = 0.0  # the current pause; 0 while accept() works
        self._resume_at: float | None = None  # time.monotonic() to watch the listener again
        self._last_log = -LOG_INTERVAL
        self._failures = 0  # accept() failures since the last log line
        self._announced = False  # a pause was logged: log the recovery once, too
        self._selector = _PausingSelector(self._selector, self)

    def _from_server_socket(self, server_socket: Any) -> Any:
        try:
            conn = super()._from_server_socket(server_socket)  # type: ignore[misc]
        except OSError as err:
            if err.errno not in _OUT_OF_RESOURCES:
                raise
            self._back_off(err)
            return None
        if self._pause and conn is not None:
            self._pause = 0.0
            if self._announced:  # at most one such line per logged pause: flapping stays quiet
                self._announced = False
                self.server.error_log(
                    f"accepting connections again ({self._failures} more accept() "
                    "failure(s) since the last message)",
                    level=logging.WARNING,
                )
                self._failures = 0
        return conn

    def _back_off(self, err: OSError) -> None:
        self._failures += 1
        self._pause = min(LONGEST_PAUSE, self._pause * 2 if self._pause else FIRST_PAUSE)
        now = time.monotonic()
        self._resume_at = now + self._pause
        self._selector.unregister(self.server.socket.fileno())
        if now - self._last_log >= LOG_INTERVAL:
            self._last_log = now
            self._announced = True
            self.server.error_log(
                f"accept() failed: {err.strerror} ({errno.errorcode.get(err.errno or 0, '?')}); "
                f"not accepting for up to {LONGEST_PAUSE:g} s at a time until descriptors are "
                f"free (RLIMIT_NOFILE, LimitNOFILE=); {self._failures} failure(s) since the "
                "last message",
                level=logging.WARNING,
            )
            self._failures = 0

    def resume_if_due(self) -> float | None:
        """Watch the listener again once the pause is over; else the seconds left of it."""
        if self._resume_at is None:
            return None
        left = self._resume_at - time.monotonic()
        if left > 0:
            return left
        self._resume_at = None
        if self.server.socket is not None:
            self._selector.register(self.server.socket.fileno(), selectors.EVENT_READ, self.server)
        return None


class _PausingSelector:
    """cheroot's selector, with select() waking up when a pause ends (cheroot selects for
    ``expiration_interval``, 0.5 s, which would stretch every pause to at least that)."""

    def __init__(self, inner: Any, manager: BackoffConnections) -> None:
        self._inner = inner
        self._manager = manager

    def select(self, timeout: float | None = None) -> Any:
        left = self._manager.resume_if_due()
        if left is not None and (timeout is None or left < timeout):
            timeout = left
        return self._inner.select(timeout=timeout)

    def __len__(self) -> int:
        return len(self._inner)

    def __getattr__(self, name: str) -> Any:  # register, unregister, connections, close
        return getattr(self._inner, name)
