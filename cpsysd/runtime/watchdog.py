"""The systemd watchdog (``WatchdogSec=``), pinged only while the app actually answers.

sd_watchdog_enabled(3): the watchdog applies when ``WATCHDOG_USEC`` is set and ``WATCHDOG_PID``
is unset or our PID; the service must send ``WATCHDOG=1`` more often than every WATCHDOG_USEC, and
half of it is the recommended period.

A timer thread that pings unconditionally would keep a hung app alive for ever, which is what the
watchdog exists to prevent; one that pings only while a worker is free kills a healthy service
whose pool is merely busy (measured: slow clients holding every worker made systemd abort it,
core dump and all, each period). So every period each server's probe
(:meth:`cpsysd.runtime.server.ListenerHTTPServer.probe`) reports progress: the accepting thread's
loop still turns, and a worker is free or, since the previous period, a request completed or a
busy connection moved a byte. When every request thread is stuck (a deadlock, a hung backend
call without timeout) nothing moves, the pings stop, and systemd restarts the service after
WatchdogSec=. A real HTTP request to ourselves is not used: under the generated units'
``PrivateNetwork=yes`` the process cannot connect to the TCP sockets systemd passed in.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Sequence

from cpsysd.runtime import notify

MAX_PERIOD = 3600.0  # ping at least hourly: a huge WATCHDOG_USEC would overflow Event.wait()
# A tiny WATCHDOG_USEC (systemd accepts WatchdogSec=1us) would make the thread spin; systemd
# cannot act on pings faster than this anyway.
MIN_PERIOD = 0.01
Probe = Callable[[], "bool | None"]  # True: progress; False: stuck; None: not known yet


def watchdog_period() -> float | None:
    """Seconds between pings (half of WATCHDOG_USEC), or None when no watchdog applies to us."""
    usec_text = os.environ.get("WATCHDOG_USEC", "")
    pid_text = os.environ.get("WATCHDOG_PID")
    if pid_text is not None and pid_text != str(os.getpid()):
        return None
    # sd_watchdog_enabled(3) parses a 64-bit number; more digits are as invalid as letters.
    if not (usec_text.isascii() and usec_text.isdigit() and len(usec_text) <= 20):
        return None
    if int(usec_text) == 0:
        return None
    return max(min(int(usec_text) / 2 / 1_000_000, MAX_PERIOD), MIN_PERIOD)


class Watchdog:
    """Pings every ``period`` seconds while every probe answers; see the module docstring."""

    def __init__(
        self, period: float, probes: Sequence[Probe], log: Callable[[str], object] = print
    ) -> None:
        self.period = period
        self.probes = list(probes)
        self.log = log
        self.pings = 0
        self.status_when_healthy = ""
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._healthy = True

    def start(self) -> None:
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="cpsysd-watchdog", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=self.period + 1)
        self._thread = None

    def check(self) -> bool:
        """Run every probe once; True when none reports "not answering"."""
        results = [probe() for probe in self.probes]  # all of them: each queues its next probe
        return all(result is not False for result in results)

    def _run(self) -> None:
        # The first check comes one period after start: the servers' accept loops are started
        # in threads of their own and may not run yet at the instant the engine reports
        # started, and a probe then would read as "not answering". systemd expects the first
        # ping within WatchdogSec= of READY=1; one period is half of it.
        while not self._stop.wait(self.period):
            if self.check():
                if notify.watchdog():
                    self.pings += 1
                if not self._healthy:
                    self._healthy = True
                    self.log("watchdog: the app answers again; pinging")
                    if self.status_when_healthy:
                        notify.status(self.status_when_healthy)
            elif self._healthy:
                self._healthy = False
                self.log(
                    f"watchdog: no request thread answered or made progress within "
                    f"{self.period:g} s while all were busy; not pinging (systemd restarts the "
                    "service if this lasts)"
                )
                notify.status("Not answering: every request thread is busy or stuck")
