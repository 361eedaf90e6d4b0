"""The example app of cpsysd's README: a small but real CherryPy application.

Serve it in development with ``cpsysd serve -c examples/hello/cpsysd.toml``, try it under a real
systemd with ``cpsysd try -c examples/hello/cpsysd.toml``.
"""

from __future__ import annotations

import os
import time

import cherrypy


class Root:
    """``/`` greets, ``/whoami`` shows what the server knows about the client, ``/slow`` takes
    its time (to watch graceful stops), ``/health`` is for load balancers."""

    @cherrypy.expose
    def index(self) -> str:
        greeting = cherrypy.request.app.config.get("hello", {}).get("greeting", "Hello")
        return f"{greeting} from cpsysd! pid={os.getpid()} uid={os.getuid()}\n"

    @cherrypy.expose
    @cherrypy.tools.json_out()
    def whoami(self) -> dict[str, object]:
        remote = cherrypy.request.remote
        return {
            "ip": remote.ip,
            "port": remote.port,
            "scheme": cherrypy.request.scheme,
            "host": cherrypy.request.headers.get("Host", ""),
            "pid": os.getpid(),
            "uid": os.getuid(),
        }

    @cherrypy.expose
    def slow(self, seconds: str = "2") -> str:
        delay = min(float(seconds), 30.0)
        cherrypy.log(f"slow request for {delay} s")
        time.sleep(delay)
        return f"slept {delay} s\n"

    @cherrypy.expose
    def health(self) -> str:
        return "ok\n"
