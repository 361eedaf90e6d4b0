"""Virtual hosts: the description's ``[vhosts]`` as a CherryPy dispatcher.

:func:`cherrypy.dispatch.VirtualHost` looks the Host header up verbatim: ``Blog.Example``, a
trailing dot, or a port other than the ones listed miss, and a wildcard such as
``*.example.org`` (which nginx's ``server_name`` accepts, and which the generated nginx site
passes on) never matches. :func:`vhost_dispatcher` keeps VirtualHost's behaviour otherwise (the
prefix joined to the path, the next dispatcher called, the staticdir section touched up) and
matches host names the way nginx does (``server_name`` in ngx_http_core_module): case-insensitive,
port and trailing dot ignored, exact names first, then the longest ``*.suffix`` that the name
ends with (``*.example.org`` matches ``a.example.org`` and ``a.b.example.org``, not
``example.org``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any


def host_name(header: str) -> str:
    """The host of a Host header value: no port, no trailing dot, lower case."""
    text = header.strip()
    if text.startswith("["):  # [v6]:port
        end = text.find("]")
        text = text[: end + 1] if end != -1 else text
    elif text.count(":") == 1:
        text = text.split(":", 1)[0]
    return text.rstrip(".").lower()


class HostTable:
    """Domain -> path prefix, with nginx's order of matching."""

    def __init__(self, vhosts: Iterable[tuple[str, str]]) -> None:
        self.exact: dict[str, str] = {}
        wildcards: list[tuple[str, str]] = []
        for domain, prefix in vhosts:
            value = "" if prefix == "/" else prefix.rstrip("/")
            if domain.startswith("*."):
                wildcards.append((domain[1:].lower(), value))  # ".example.org"
            else:
                self.exact[domain.lower()] = value
        self.wildcards = sorted(wildcards, key=lambda item: len(item[0]), reverse=True)

    def prefix_for(self, header: str) -> str:
        """The path prefix for a Host header value; "" when no domain matches."""
        host = host_name(header)
        if host in self.exact:
            return self.exact[host]
        for suffix, prefix in self.wildcards:
            if host.endswith(suffix) and len(host) > len(suffix):
                return prefix
        return ""


def vhost_dispatcher(
    vhosts: Iterable[tuple[str, str]],
    trust_forwarded_host: bool,
    next_dispatcher: Callable[[str], Any] | None = None,
) -> Callable[[str], Any]:
    """A CherryPy ``request.dispatch`` that prefixes the path by the matched domain's prefix.

    ``X-Forwarded-Host`` is used only when ``trust_forwarded_host`` (a proxy in front sets it);
    otherwise any client could pick the virtual host with it."""
    import cherrypy
    from cherrypy.lib import httputil

    table = HostTable(vhosts)
    dispatch = next_dispatcher or cherrypy.dispatch.Dispatcher()

    def dispatch_by_host(path_info: str) -> Any:
        request = cherrypy.serving.request
        header = request.headers.get("Host", "")
        if trust_forwarded_host:
            header = request.headers.get("X-Forwarded-Host", header).split(",")[0]
        prefix = table.prefix_for(header)
        if prefix:
            path_info = httputil.urljoin(prefix, path_info)
        result = dispatch(path_info)
        section = request.config.get("tools.staticdir.section")
        if section:  # as VirtualHost does: https://github.com/cherrypy/cherrypy/issues/614
            request.config["tools.staticdir.section"] = section[len(prefix) :]
        return result

    return dispatch_by_host
