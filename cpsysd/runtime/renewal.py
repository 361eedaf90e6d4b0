"""A failing ACME renewal, shown in the service's ``STATUS=`` (``systemctl status NAME``).

The renewal job (root, :mod:`cpsysd.host.acmerenew`) keeps the old certificate when the CA
fails it, and writes one line saying why to ``/run/cpsysd/acme-status/NAME/failure`` (world-
readable, like the STATUS= text it becomes; removed when a renewal succeeds). The job cannot
send the STATUS= itself: with ``NotifyAccess=main`` systemd takes notifications from the main
PID only, and ``systemd-notify --pid=MAINPID`` claims another PID only with CAP_SYS_ADMIN
(unix(7) SCM_CREDENTIALS). Seen under the harness's systemd 252: from a root job with
``CapabilityBoundingSet=`` (like ours) systemd files the message under the job's own PID and
drops it; with CAP_SYS_ADMIN it lands, a capability the job should not get for this. So the
service reads the record: at start, at reload, and every
:data:`POLL_SECONDS` from a thread of its own, which costs one ``stat()`` when nothing changed.
"""

from __future__ import annotations

import os
import threading
from typing import Any

from cpsysd.runtime import notify
from cpsysd.runtime.bus import Plugin

POLL_SECONDS = 10.0
MAX_RECORD = 1024  # one line of an error message; more is cut


def read_failure(path: str) -> str | None:
    """The job's failure line, or None when renewals succeed (no record, or an empty one)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        text = os.read(fd, MAX_RECORD).decode("utf-8", "replace")
    except OSError:
        return None
    finally:
        os.close(fd)
    line = " ".join(text.split())
    return line or None


class RenewalStatus(Plugin):
    """Appends the failure record to the serving STATUS=, and re-sends it when it changes."""

    def __init__(self, bus: Any, path: str, status_text: str) -> None:
        super().__init__(bus)
        self.path = path
        self.status_text = status_text
        self.poll_seconds = POLL_SECONDS
        self._seen: tuple[int, int] | None = None  # (mtime_ns, inode) of the record read last
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def compose(self, status: str) -> str:
        """``status``, with ``; certificate renewal failing since ...: CAUSE`` while it fails."""
        self._seen = self._stamp()
        failure = read_failure(self.path)
        return status if failure is None else f"{status}; {failure}"

    def _stamp(self) -> tuple[int, int] | None:
        try:
            info = os.stat(self.path)
        except OSError:
            return None
        return info.st_mtime_ns, info.st_ino

    def poll(self) -> bool:
        """Send STATUS= again when the record appeared, changed or went; True when it did."""
        if self._stamp() == self._seen:
            return False
        return notify.status(self.compose(self.status_text))

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="cpsysd-renewal", daemon=True)
        self._thread.start()

    start.priority = 85  # type: ignore[attr-defined]  # after READY=1 (NotifyPlugin, 80)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=1)
        self._thread = None

    stop.priority = 5  # type: ignore[attr-defined]

    def _run(self) -> None:
        while not self._stop.wait(self.poll_seconds):
            self.poll()
