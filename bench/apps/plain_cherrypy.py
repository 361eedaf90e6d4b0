"""The example app under plain ``cherrypy.quickstart``, CherryPy's defaults: what a user runs
without cpsysd. ``plain_cherrypy.py PORT`` binds 127.0.0.1:PORT; under socket activation
(LISTEN_PID set) cheroot takes fd 3 itself and the port is ignored. ``plain_cherrypy.py PORT
BYTES`` sets server.max_request_body_size (bench/uploads.py: the same limit as cpsysd's)."""

from __future__ import annotations

import sys
from pathlib import Path

import cherrypy

HELLO = Path(__file__).resolve().parents[2] / "examples" / "hello"
sys.path.insert(0, str(HELLO))

from hello import Root  # noqa: E402

port = int(sys.argv[1]) if len(sys.argv) > 1 else 8080
cherrypy.config.update({"server.socket_host": "127.0.0.1", "server.socket_port": port})
if len(sys.argv) > 2:
    cherrypy.config.update({"server.max_request_body_size": int(sys.argv[2])})
cherrypy.quickstart(Root(), "/", str(HELLO / "app.conf"))
