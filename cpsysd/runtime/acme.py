"""http-01 answers (RFC 8555 section 8.3) served before the app sees the request.

The renewal job (root, :mod:`cpsysd.tls.acme`) writes ``DIR/TOKEN`` holding the key
authorization, world-readable, into a directory the app's DynamicUser can read but not write
(``/run/cpsysd/acme/NAME`` by default, made by systemd as the job's ``RuntimeDirectory=``). This
WSGI wrapper answers ``GET /.well-known/acme-challenge/TOKEN`` from there on the plain
listeners, so the app never routes that path and a challenge is answered even when the app's
own root would redirect or require a login. Anything else under the prefix is a 404 from here,
never the app's: a token is base64url (section 8.1), so no other name can reach a file.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable
from typing import Any

from cpsysd.runtime.acmelog import AnswerLog, default_log

PREFIX = "/.well-known/acme-challenge/"
_TOKEN = re.compile(r"[A-Za-z0-9_-]{1,256}")
MAX_ANSWER = 1024  # a key authorization is token "." thumbprint: about 130 bytes

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


def read_answer(directory: str, token: str) -> bytes | None:
    """The key authorization for ``token``, or None when there is none (or the token is bad)."""
    if not _TOKEN.fullmatch(token):
        return None
    return read_small_file(os.path.join(directory, token))


def read_small_file(path: str) -> bytes | None:
    """Up to :data:`MAX_ANSWER` bytes of ``path``, stripped; None when it cannot be read. A
    symlink is refused (O_NOFOLLOW): only the job's own files are answers."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        return os.read(fd, MAX_ANSWER).strip()
    except OSError:
        return None
    finally:
        os.close(fd)


def with_challenges(app: WSGIApp, directory: str, log: AnswerLog | None = None) -> WSGIApp:
    """``app``, with ``/.well-known/acme-challenge/`` answered from ``directory`` first; each
    answer is a (rate-limited) line in ``log``, the process's own by default."""
    answers = log or default_log()

    def serve(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if not path.startswith(PREFIX):
            return app(environ, start_response)
        answer = None
        if environ.get("REQUEST_METHOD") in ("GET", "HEAD"):
            answer = read_answer(directory, path[len(PREFIX) :])
        if answer is None:
            body = b"no such ACME challenge\n"
            start_response("404 Not Found", [_TYPE, ("Content-Length", str(len(body)))])
            return [body]
        host = str(environ.get("HTTP_HOST") or environ.get("SERVER_NAME") or "")
        name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
        answers.answered("http-01", name, _remote(environ))
        start_response("200 OK", [_TYPE, ("Content-Length", str(len(answer)))])
        return [answer] if environ.get("REQUEST_METHOD") == "GET" else []

    return serve


_TYPE = ("Content-Type", "text/plain")


def _remote(environ: dict[str, Any]) -> str:
    host, port = str(environ.get("REMOTE_ADDR") or "-"), environ.get("REMOTE_PORT")
    host = f"[{host}]" if ":" in host else host
    return f"{host}:{port}" if port else host
