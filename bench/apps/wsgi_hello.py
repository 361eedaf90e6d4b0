"""The example app as a WSGI callable, for gunicorn and uWSGI: how CherryPy's docs deploy an app
under another WSGI server (no CherryPy HTTP server, engine started once per worker process, no
access log on the screen: the production environment)."""

from __future__ import annotations

import sys
from pathlib import Path

import cherrypy

HELLO = Path(__file__).resolve().parents[2] / "examples" / "hello"
sys.path.insert(0, str(HELLO))

from hello import Root  # noqa: E402

cherrypy.config.update({"environment": "production", "log.screen": False})
cherrypy.server.unsubscribe()
cherrypy.engine.signals.subscribe = lambda: None  # the WSGI server owns the signals
application = cherrypy.tree.mount(Root(), "/", str(HELLO / "app.conf"))
cherrypy.engine.start()
