"""Logging for ``cpsysd serve``: journald with structured fields under systemd, stderr otherwise.

Under systemd (stderr is the journal stream named by ``JOURNAL_STREAM``, systemd.exec(5), or
``INVOCATION_ID`` is set and journald's socket exists) error records go to the journal through
:class:`systemd.journal.JournalHandler` (PRIORITY, LOGGER, CODE_*, ...) and every request writes
one access entry with the fields ``REMOTE_ADDR``, ``REMOTE_PORT``, ``METHOD``, ``PATH``,
``QUERY_STRING``, ``PROTOCOL``, ``STATUS``, ``BYTES``, ``HOST``, ``USER_AGENT``, ``REFERER``,
``CPSYSD_LOG=access`` (``journalctl -u NAME CPSYSD_LOG=access STATUS=500``). Otherwise both go to
stderr, access lines in the combined log format. The access path costs one formatted string and
one write (sendmsg to journald, or a line to stderr) per request: CherryPy's own access() is
replaced for the served apps, because its per-field escaping and logging machinery would cost
more than the rest of the request.

``log.screen = False`` written in the config's [global] section turns both streams off, as it
does for CherryPy's screen output (``environment = "production"`` does not: under systemd the
screen is the journal); ``log.access_file``/``log.error_file`` keep working as in CherryPy.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Callable
from typing import Any

_JOURNAL_SOCKET = "/run/systemd/journal/socket"
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def stderr_is_journal() -> bool:
    """True when fd 2 is the journal stream systemd set up (``JOURNAL_STREAM=dev:inode``)."""
    value = os.environ.get("JOURNAL_STREAM", "")
    device, _, inode = value.partition(":")
    try:
        info = os.fstat(2)
    except OSError:
        return False
    return bool(inode) and f"{info.st_dev}:{info.st_ino}" == f"{device}:{inode}"


def use_journal() -> bool:
    """Whether to log to journald: run by systemd and journald reachable."""
    return stderr_is_journal() or (
        "INVOCATION_ID" in os.environ and os.path.exists(_JOURNAL_SOCKET)
    )


def _printable(text: str) -> str:
    # Log injection: a header with a newline must not start a fake log line.
    return text if text.isprintable() else text.encode("unicode_escape").decode("ascii")


class AccessSink:
    """Where access records go; one instance per process, shared by every served app."""

    def __init__(self, identifier: str, to_journal: bool, stream: Any = None) -> None:
        self.identifier = identifier
        self.to_journal = to_journal
        self.enabled = True
        self.stream = stream if stream is not None else sys.stderr
        self._second = -1
        self._stamp = ""
        if to_journal:
            from systemd import journal

            self._sendv = journal.sendv

    def _time(self) -> str:
        now = int(time.time())
        if now != self._second:  # formatting the time costs more than the rest of the line
            t = time.localtime(now)
            offset = t.tm_gmtoff // 60
            sign = "-" if offset < 0 else "+"
            self._stamp = (
                f"{t.tm_mday:02d}/{_MONTHS[t.tm_mon - 1]}/{t.tm_year}:{t.tm_hour:02d}:"
                f"{t.tm_min:02d}:{t.tm_sec:02d} {sign}{abs(offset) // 60:02d}{abs(offset) % 60:02d}"
            )
            self._second = now
        return self._stamp

    def emit(self, request: Any, response: Any) -> None:
        """Log one finished CherryPy request (called in the request's thread)."""
        status_line = response.output_status
        headers = request.headers
        remote = request.remote
        self.record(
            remote.name or remote.ip or "-",
            remote.port,
            request.method,
            request.script_name + request.path_info,
            request.query_string,
            request.server_protocol,
            request.request_line,
            status_line[:3].decode("ascii", "replace") if status_line else "-",
            dict.get(response.headers, "Content-Length") or "-",
            dict.get(headers, "Host", ""),
            dict.get(headers, "User-Agent", ""),
            dict.get(headers, "Referer", ""),
            getattr(request, "login", None) or "-",
        )

    def record(
        self,
        ip: str,
        port: object,
        method: str,
        path: str,
        query: str,
        protocol: str,
        request_line: str,
        status: str,
        size: str,
        host: str,
        agent: str,
        referer: str,
        login: str,
    ) -> None:
        """Write one access entry: journal fields, or a combined-log-format line."""
        if self.to_journal:
            self._sendv(
                f'MESSAGE={ip} "{request_line}" {status} {size}',
                "PRIORITY=6",
                f"SYSLOG_IDENTIFIER={self.identifier}",
                "CPSYSD_LOG=access",
                f"REMOTE_ADDR={ip}",
                f"REMOTE_PORT={port}",
                f"METHOD={method}",
                f"PATH={path}",
                f"QUERY_STRING={query}",
                f"PROTOCOL={protocol}",
                f"STATUS={status}",
                f"BYTES={size}",
                f"HOST={host}",
                f"USER_AGENT={agent}",
                f"REFERER={referer}",
            )
            return
        stamp = self._time()
        line = f'{ip} - {login} [{stamp}] "{request_line}" {status} {size} "{referer}" "{agent}"'
        self.stream.write(_printable(line) + "\n")

    def emit_wsgi(
        self, environ: dict[str, Any], status: str, headers: list[tuple[str, str]]
    ) -> None:
        """Log one finished request of a plain WSGI app."""
        get = environ.get
        path = get("SCRIPT_NAME", "") + get("PATH_INFO", "")
        query = get("QUERY_STRING", "")
        method, protocol = get("REQUEST_METHOD", "-"), get("SERVER_PROTOCOL", "-")
        size = next((value for name, value in headers if name.lower() == "content-length"), "-")
        self.record(
            get("REMOTE_ADDR") or "-",
            get("REMOTE_PORT", ""),
            method,
            path,
            query,
            protocol,
            f"{method} {path}{'?' if query else ''}{query} {protocol}",
            status[:3],
            size,
            get("HTTP_HOST", ""),
            get("HTTP_USER_AGENT", ""),
            get("HTTP_REFERER", ""),
            get("REMOTE_USER") or "-",
        )


class _LoggedBody:
    """The WSGI response iterable, logged when the server closes it (PEP 3333: always)."""

    __slots__ = ("_body", "_environ", "_sink", "_state")

    def __init__(
        self, body: Any, environ: dict[str, Any], state: list[Any], sink: AccessSink
    ) -> None:
        self._body, self._environ, self._state, self._sink = body, environ, state, sink

    def __iter__(self) -> Any:
        return iter(self._body)

    def close(self) -> None:
        try:
            close = getattr(self._body, "close", None)
            if close is not None:
                close()
        finally:
            if self._sink.enabled and self._state:
                self._sink.emit_wsgi(self._environ, self._state[0], self._state[1])


def wsgi_with_access_log(app: Callable[..., Any], sink: AccessSink) -> Callable[..., Any]:
    """Wrap a WSGI callable so each request gets one access entry."""

    def logged(environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        state: list[Any] = []

        def capture(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            state[:] = (status, headers)
            return start_response(status, headers, exc_info)

        return _LoggedBody(app(environ, capture), environ, state, sink)

    return logged


class _JournalErrorHandler(logging.Handler):
    """JournalHandler without CherryPy's "[date] " prefix (journald stamps every entry)."""

    def __init__(self, identifier: str) -> None:
        super().__init__()
        from systemd import journal

        self._journal = journal.JournalHandler(SYSLOG_IDENTIFIER=identifier)

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if message.startswith("[") and "] " in message[:30]:
            record.msg, record.args = message.split("] ", 1)[1].lstrip(), ()
        self._journal.emit(record)


def _error_handler(identifier: str, to_journal: bool) -> logging.Handler:
    handler: logging.Handler
    if to_journal:
        handler = _JournalErrorHandler(identifier)
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(message)s"))
    handler._cpsysd = True  # type: ignore[union-attr]
    return handler


def configure_logging(sink: AccessSink, screen: bool = True) -> None:
    """Route CherryPy's error log (and the root logger, when the app did not configure it) to
    journald or stderr, and switch the access sink on or off (``screen``: the config's
    ``log.screen``). Safe to call again after a config reload."""
    cherrypy = sys.modules.get("cherrypy")  # absent for a WSGI app served on cheroot alone
    if cherrypy is not None:
        cherrypy.log.screen = False  # its own handlers: stdout for access, stderr for errors
        logging.getLogger("cherrypy.access").propagate = False  # log.access_file stays there
    root = logging.getLogger()
    for handler in [h for h in root.handlers if getattr(h, "_cpsysd", False)]:
        root.removeHandler(handler)
    sink.enabled = screen
    if screen and not root.handlers:
        # cherrypy.error (level INFO) propagates to the root logger; apps' own loggers too.
        root.addHandler(_error_handler(sink.identifier, sink.to_journal))
