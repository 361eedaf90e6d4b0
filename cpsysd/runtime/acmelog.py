"""One journal line per ACME validation the runtime answers (http-01 in :mod:`acme`,
tls-alpn-01 in :mod:`alpn`): which name, to which address. An operator reading why a renewal
failed sees whether the CA's validation reached the app at all.

Rate-limited (a token bucket: :data:`BURST` lines at once, then one per :data:`EVERY` seconds)
because anyone who learns a pending token or offers ``acme-tls/1`` for a pending name can make
the runtime answer as often as they connect; the lines held back are counted and the count goes
into the next line written. A CA validates each name from a handful of vantage points per order,
so a real validation fits in the burst.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Callable

BURST = 10
EVERY = 6.0  # seconds per line once the burst is spent: 10 a minute
_MAX_FIELD = 100  # a Host header is the client's to choose: keep the line short


def _clean(text: str) -> str:
    text = "".join(ch if ch.isprintable() and ch != " " else "?" for ch in text)
    return text[:_MAX_FIELD] or "-"


def _to_cherrypy_log(message: str) -> None:
    cherrypy = sys.modules.get("cherrypy")
    if cherrypy is None:  # the lean wsgi path (runtime/lean.py) never imports CherryPy
        logging.getLogger("cpsysd").info("ACME: %s", message)  # the lean bus's logger
        return
    cherrypy.log(message, "ACME")  # its error log is routed to journald (journal.py)


class AnswerLog:
    """Writes "answered CHALLENGE for NAME to ADDRESS" through ``emit``, rate-limited."""

    def __init__(
        self,
        emit: Callable[[str], None] = _to_cherrypy_log,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._emit = emit
        self._clock = clock
        self._lock = threading.Lock()  # answers come from several worker threads
        self._tokens = float(BURST)
        self._last = clock()
        self._held = 0

    def answered(self, challenge: str, name: str, address: str) -> None:
        with self._lock:
            now = self._clock()
            self._tokens = min(BURST, self._tokens + (now - self._last) / EVERY)
            self._last = now
            if self._tokens < 1:
                self._held += 1
                return
            self._tokens -= 1
            held, self._held = self._held, 0
        line = f"answered the {challenge} validation for {_clean(name)} to {_clean(address)}"
        if held:
            line += f" ({held} more answers not logged: at most one line per {EVERY:g} s)"
        self._emit(line)


_default: AnswerLog | None = None


def default_log() -> AnswerLog:
    """The process's one log (every listener shares the rate)."""
    global _default
    if _default is None:
        _default = AnswerLog()
    return _default


def peer_of(sock: object) -> str:
    """``host:port`` (``[v6]:port``) of a connected socket; "-" when it has none (unix)."""
    try:
        peer = sock.getpeername()  # type: ignore[attr-defined]
    except (OSError, AttributeError):
        return "-"
    if isinstance(peer, tuple) and len(peer) >= 2:
        host = str(peer[0])
        return f"[{host}]:{peer[1]}" if ":" in host else f"{host}:{peer[1]}"
    return str(peer) or "-"
