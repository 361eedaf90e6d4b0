"""The service's side of sd_notify(3), through :func:`systemd.daemon.notify`.

Every function is a no-op returning False when ``NOTIFY_SOCKET`` is unset (not run by systemd, or
``Type=simple``); libsystemd reads the variable on each call. NOTIFY_SOCKET is deliberately left in
the environment: it is needed for the whole life of the process, and with the generated units'
``NotifyAccess=main`` messages from children are ignored by systemd anyway.
"""

from __future__ import annotations

import os
import threading
import time

from systemd import daemon

USEC = 1_000_000


def _clean(text: str) -> str:
    # One assignment per line (sd_notify(3)): a newline in a status would start a new one.
    return " ".join(text.split()) if not text.isprintable() else text


def send(*assignments: str) -> bool:
    """Send ``VAR=value`` assignments in one datagram; False if nobody listens."""
    if "NOTIFY_SOCKET" not in os.environ:
        return False
    try:
        return bool(daemon.notify("\n".join(assignments)))
    except OSError:  # the manager went away (e.g. during its own shutdown): nothing to tell
        return False


def ready(status: str) -> bool:
    """``READY=1``: every server accepts connections (start-up or a reload finished)."""
    return send("READY=1", f"STATUS={_clean(status)}")


def status(text: str) -> bool:
    """``STATUS=``: a one-line state shown by ``systemctl status``."""
    return send(f"STATUS={_clean(text)}")


def reloading(status_text: str = "Reloading configuration") -> bool:
    """``RELOADING=1`` with ``MONOTONIC_USEC`` (CLOCK_MONOTONIC, as systemd 253+ requires for
    Type=notify-reload; older managers ignore the extra field). Follow with :func:`ready`."""
    now = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    return send("RELOADING=1", f"MONOTONIC_USEC={now}", f"STATUS={_clean(status_text)}")


def stopping(status_text: str = "Stopping: finishing in-flight requests") -> bool:
    """``STOPPING=1``: the service is shutting down (``systemctl status``: deactivating)."""
    return send("STOPPING=1", f"STATUS={_clean(status_text)}")


def watchdog() -> bool:
    """``WATCHDOG=1``: the keep-alive ping (see :mod:`cpsysd.runtime.watchdog`)."""
    return send("WATCHDOG=1")


def extend_timeout(seconds: float) -> bool:
    """``EXTEND_TIMEOUT_USEC``: the start (or stop) may take ``seconds`` more from now."""
    return send(f"EXTEND_TIMEOUT_USEC={int(seconds * USEC)}")


def failed(message: str) -> bool:
    """The last ``STATUS=`` before a failed start exits, so ``systemctl status`` says why."""
    return status(f"Failed: {message}")


class StartupExtender:
    """While a slow start (importing the app) runs, keep extending systemd's start timeout.

    Quiet for the first ``grace`` seconds (most apps import in well under a second); then every
    ``every`` seconds sends ``EXTEND_TIMEOUT_USEC`` of ``2 * every`` and a STATUS saying how long
    the import has taken. It gives up after ``limit`` seconds so that a hung import still hits
    TimeoutStartSec= eventually. Use as a context manager around the slow part.
    """

    def __init__(
        self, what: str, grace: float = 5.0, every: float = 10.0, limit: float = 600.0
    ) -> None:
        self.what, self.grace, self.every, self.limit = what, grace, every, limit
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, name="cpsysd-extend-timeout", daemon=True)
        self.extensions = 0

    def _run(self) -> None:
        start = time.monotonic()
        if self._done.wait(self.grace):
            return
        while time.monotonic() - start < self.limit:
            elapsed = time.monotonic() - start
            if send(
                f"EXTEND_TIMEOUT_USEC={int(2 * self.every * USEC)}",
                f"STATUS={self.what} ({elapsed:.0f} s so far)",
            ):
                self.extensions += 1
            if self._done.wait(self.every):
                return

    def __enter__(self) -> StartupExtender:
        if "NOTIFY_SOCKET" in os.environ:
            self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._done.set()
        # A send under way must land before the caller goes on to READY=1: a late STATUS
        # ("importing ... so far") would otherwise replace the one READY=1 sets.
        if self._thread.is_alive():
            self._thread.join(timeout=2)
