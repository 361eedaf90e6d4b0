"""``cpsysd nginx``: an nginx site in front of the app (CherryPy's deployment guide, "Reverse
proxy"), to be included from nginx's ``http`` context.

The upstream is the app itself: every worker instance (:mod:`cpsysd.render.workers`), or the hosts
of
``[nginx] upstream`` when given (the app runs on other machines; list ``127.0.0.1:PORT`` too if
this one also serves it). Of the app's listeners nginx uses the first plain unix socket, else
the first plain TCP one, else the first TLS one (then it proxies over HTTPS). ``vhosts`` get one
``server`` block per domain; the app's VirtualHost dispatcher maps the forwarded Host to a path.

Rendering is pure; every value that reaches the template is checked against nginx's token
syntax here (the spec already rejects spaces, quotes, ``;``, braces and ``$``; this is the
second line of defence, because one stray ``;`` would let a value add directives).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cpsysd.description.load import AppSpec, Listener, NginxConfig
from cpsysd.errors import CpsysdError, SpecError
from cpsysd.render import workers

# What an unquoted nginx token may contain here: no whitespace, quotes, ';', braces, '$', '#'.
_TOKEN = re.compile(r"[A-Za-z0-9_.:/@*\[\]~+=,-]+")
_LOOPBACK = {None: "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1"}
DEFAULT_LISTEN_HOSTS = ("", "[::]")


def _token(fieldname: str, value: str) -> str:
    if not _TOKEN.fullmatch(value):
        raise SpecError(
            fieldname,
            f"{value!r} cannot be written into an nginx config",
            "use a value without spaces, quotes, ';', '{', '}', '$' or '#'",
        )
    return value


def _listen_host(host: str) -> str:
    """``""`` (every IPv4 address), an IPv4 address or a bracketed IPv6 one."""
    try:
        if host.startswith("[") and host.endswith("]"):
            ipaddress.IPv6Address(host[1:-1])
        elif host:
            ipaddress.IPv4Address(host)
    except ValueError:
        raise SpecError(
            "listen host", f"{host!r} is not an IP address", "e.g. 127.0.0.1 or [::1]"
        ) from None
    return host


def upstream_name(spec: AppSpec) -> str:
    """The ``upstream`` block's name: ``cpsysd_`` and the app name, letters/digits/_ only (a
    ``:`` or ``.`` would make ``proxy_pass http://NAME`` parse as a host and port)."""
    return "cpsysd_" + re.sub(r"[^A-Za-z0-9_]", "_", spec.name)


def _proxied_listener(spec: AppSpec) -> Listener:
    plain = [listener for listener in spec.listeners if not listener.tls]
    for candidates in ([lst for lst in plain if lst.is_unix], plain, list(spec.listeners)):
        if candidates:
            return candidates[0]
    raise SpecError("listen", "is empty")  # parse_spec never allows this


def _server_address(listener: Listener) -> str:
    if listener.path is not None:
        return f"unix:{listener.path}"
    host = _LOOPBACK.get(listener.host, listener.host)
    assert host is not None
    return f"[{host}]:{listener.port}" if ":" in host else f"{host}:{listener.port}"


def upstream_servers(spec: AppSpec) -> list[str]:
    """The ``server`` entries of the upstream: the configured hosts, or each instance's socket
    (one entry for a port the instances share with ReusePort=yes: the kernel balances it)."""
    if spec.nginx and spec.nginx.upstream:
        return list(spec.nginx.upstream)
    listener = _proxied_listener(spec)
    if spec.workers == 1:
        return [_server_address(listener)]
    addresses = [
        _server_address(workers.instance_listener(spec, listener, instance))
        for instance in workers.instance_names(spec)
    ]
    return list(dict.fromkeys(addresses))


@dataclass(frozen=True)
class _Block:
    server_names: tuple[str, ...]
    path: str | None = None  # the vhost's path prefix in the app


def _blocks(spec: AppSpec, config: NginxConfig) -> list[_Block]:
    """The main block (``server_name`` of ``[nginx]``) and one block per vhost domain; a domain
    is never in two blocks (nginx would warn "conflicting server name" and ignore one)."""
    vhost_domains = [domain for domain, _ in spec.vhosts]
    main = tuple(name for name in config.server_names if name not in vhost_domains)
    blocks = [_Block(main)] if main else []
    blocks += [_Block((domain,), path) for domain, path in spec.vhosts]
    return blocks or [_Block(("_",))]


def _static_locations(config: NginxConfig) -> list[tuple[str, str]]:
    # alias and location must both end in "/" (or neither), else "/static../x" escapes the
    # directory (the classic nginx alias traversal).
    for prefix, _ in config.static:
        if not prefix.strip("/"):
            raise SpecError(
                "nginx.static", f"{prefix!r} would hide the app", 'use a prefix like "/static"'
            )
    return [
        (
            _token("nginx.static", prefix.rstrip("/") + "/"),
            _token(f"nginx.static.{prefix}", directory.rstrip("/") + "/"),
        )
        for prefix, directory in config.static
    ]


def render_site(spec: AppSpec, listen_hosts: Sequence[str] = DEFAULT_LISTEN_HOSTS) -> str:
    """The nginx site for ``spec`` (which needs an ``[nginx]`` table). ``listen_hosts``: the
    addresses nginx listens on, ``""`` meaning every IPv4 address and ``"[::]"`` every IPv6 one
    (tests pass ``("127.0.0.1",)``)."""
    from cpsysd.render.common import MARKER, comment_text, render_template

    config = spec.nginx
    if config is None:
        raise SpecError(
            "nginx", "is missing", 'add an [nginx] table, e.g. server_name = ["example.org"]'
        )
    tls = config.tls_cert is not None and config.tls_key is not None
    suffix = " ssl http2" if tls else ""
    hosts = [_listen_host(host) for host in listen_hosts]
    listens = [
        f"{host}:{config.listen}{suffix}" if host else f"{config.listen}{suffix}" for host in hosts
    ]
    blocks = _blocks(spec, config)
    return render_template(
        "nginx-site.conf.j2",
        marker=MARKER,
        source=comment_text(spec.source or "a description").replace("\n", " "),
        app_name=spec.name,
        upstream=upstream_name(spec),
        servers=[_token("nginx.upstream", server) for server in upstream_servers(spec)],
        scheme="https" if _proxied_listener(spec).tls and not config.upstream else "http",
        blocks=[
            _Block(tuple(_token("nginx.server_name", n) for n in b.server_names), b.path)
            for b in blocks
        ],
        listens=listens,
        client_max_body_size=_token("nginx.client_max_body_size", config.client_max_body_size),
        tls={
            "cert": _token("nginx.tls_cert", config.tls_cert or ""),
            "key": _token("nginx.tls_key", config.tls_key or ""),
        }
        if tls
        else None,
        static=_static_locations(config),
        redirect_listens=[f"{host}:80" if host else "80" for host in hosts]
        if tls and config.listen == 443
        else [],
        redirect_names=[name for block in blocks for name in block.server_names],
        acme_dir=_token("tls.acme_challenge_dir", spec.acme_challenge_dir)
        if spec.acme_challenge_dir
        else None,
    )


def write_site(text: str, output: Path) -> None:
    """Replace ``output`` with ``text`` atomically (mode 0644: nginx's workers must read it)."""
    from cpsysd import fsutil

    if output.is_dir():
        raise CpsysdError(
            f"{output} is a directory", "give a file name, e.g. /etc/nginx/sites-available/app.conf"
        )
    fsutil.atomic_write(output, text.encode(), 0o644)
