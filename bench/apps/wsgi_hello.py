"""The example app as a WSGI callable, for gunicorn and uWSGI: how CherryPy's docs deploy an app
under another WSGI server (no CherryPy HTTP server, engine started once per worker process).
The config is ``production/app.conf``, the one cpsysd serve gets in the scaling and overload
sections: environment "production", so CherryPy's own screen log is off; the access log is the
WSGI server's own (servers.py turns it on), as cpsysd serve's is its own."""

from __future__ import annotations

import sys
from pathlib import Path

import cherrypy

HELLO = Path(__file__).resolve().parents[2] / "examples" / "hello"
CONF = str(Path(__file__).resolve().parent / "production" / "app.conf")
sys.path.insert(0, str(HELLO))

from hello import Root  # noqa: E402

cherrypy.config.update(CONF)
cherrypy.server.unsubscribe()
cherrypy.engine.signals.subscribe = lambda: None  # the WSGI server owns the signals
application = cherrypy.tree.mount(Root(), "/", CONF)
cherrypy.engine.start()
