"""A WSGI hello app that imports nothing (no CherryPy): the same app for ``cpsysd serve`` with
``kind = "wsgi"`` (``wsgi_plain.toml``) and gunicorn, so a cold start measures the servers."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

BODY = b"Hello world!"


def application(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(BODY)))])
    return [BODY]
