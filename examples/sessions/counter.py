"""A CherryPy app with sessions, for several worker instances: each response says which
instance served it and how often this session has been counted.

Its sessions live in files in the state directory (sessions.conf), so any instance continues
the count another one started; with CherryPy's default (RAM) each instance would count alone,
and ``cpsysd verify`` warns about that.
"""

from __future__ import annotations

import os

import cherrypy


class Root:
    """``/`` counts the requests of one session."""

    _cp_config = {"tools.sessions.on": True}

    @cherrypy.expose
    @cherrypy.tools.json_out()
    def index(self) -> dict[str, object]:
        count = int(cherrypy.session.get("count", 0)) + 1
        cherrypy.session["count"] = count
        instance = os.environ.get("CPSYSD_INSTANCE", "")  # set by NAME@I.service
        return {"count": count, "instance": instance, "pid": os.getpid()}
