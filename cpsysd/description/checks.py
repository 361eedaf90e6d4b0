"""Field checkers of the app description: each takes the field's name (for the error) and the
raw TOML value, and returns the parsed value or raises :class:`~cpsysd.errors.SpecError`.
Used by :func:`cpsysd.description.load.parse_spec`."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from enum import StrEnum
from pathlib import PurePosixPath
from typing import Any, TypeVar

from cpsysd import escape
from cpsysd.description.bounds import check_text_length
from cpsysd.description.model import Listener
from cpsysd.errors import CpsysdError, SpecError

_E = TypeVar("_E", bound=StrEnum)
SUN_PATH_MAX = 107  # sizeof(sockaddr_un.sun_path) - 1 on Linux, unix(7)
PATH_MAX, NAME_MAX = 4096, 255  # limits.h; systemd's path_is_valid() enforces both
UNIT_NAME_MAX = 255  # systemd's UNIT_NAME_MAX (256) counts the NUL
# Patterns, not compiled ones: re.fullmatch() compiles (and caches) one when a field needs it.
# Compiling them all at import cost `cpsysd serve` about 0.7 ms at every start.
_FDNAME = r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}"
# systemd's strict user/group names: at most 31 characters (UT_NAMESIZE - 1); longer ones are
# accepted with a warning by systemd-analyze verify, and useradd refuses them.
_USER = r"[a-z_][a-z0-9_-]{0,30}"
_LABEL = r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_DOMAIN = rf"(\*\.)?({_LABEL}\.)*{_LABEL}"
# Characters a path may not contain: they would need quoting in list-valued directives
# (ReadWritePaths=, nginx's root) where cpsysd prefers a clear refusal to clever escaping.
_PATH_FORBIDDEN = set(" \t\"'\\;{}$`")


def is_identifier(text: str) -> bool:
    """``[A-Za-z_][A-Za-z0-9_]*``: an ASCII Python identifier (keywords included)."""
    return text.isascii() and text.isidentifier()


def is_entry(text: str) -> bool:
    """``MODULE:OBJECT``, each a dotted path of identifiers (``pkg.mod:App.root``)."""
    module, colon, attribute = text.partition(":")
    return bool(colon) and all(
        is_identifier(part) for part in (*module.split("."), *attribute.split("."))
    )


# --- field checkers: each takes (field name, raw value) and returns the parsed value -----------


def _typed(fieldname: str, value: object, kind: type | tuple[type, ...], what: str) -> Any:
    # bool is an int in Python; TOML keeps them apart, and so do we.
    if isinstance(value, bool) and kind is int:
        raise SpecError(fieldname, f"expected {what}, got {value!r}")
    if not isinstance(value, kind):
        raise SpecError(fieldname, f"expected {what}, got {type(value).__name__} {value!r}")
    return value


def _text(fieldname: str, value: object) -> str:
    text: str = _typed(fieldname, value, str, "a string")
    check_text_length(fieldname, text)
    try:
        escape.unit_value(text)
    except ValueError as err:
        raise SpecError(fieldname, f"{text!r} {err}") from None
    return text


def _int(fieldname: str, value: object, low: int, high: int) -> int:
    number: int = _typed(fieldname, value, int, "an integer")
    if not low <= number <= high:
        raise SpecError(fieldname, f"{number} is out of range", f"use {low} to {high}")
    return number


def _bool(fieldname: str, value: object) -> bool:
    flag: bool = _typed(fieldname, value, bool, "true or false")
    return flag


def _choice(fieldname: str, value: object, enum: type[_E]) -> _E:
    text: str = _typed(fieldname, value, str, "a string")
    try:
        return enum(text)
    except ValueError:
        choices = ", ".join(member.value for member in enum)
        raise SpecError(fieldname, f"{text!r} is not one of {choices}") from None


def check_path(fieldname: str, value: object, base: str | None = None) -> str:
    """An absolute, normalised path without characters that would need quoting in a unit.

    With ``base``, a relative path is taken relative to it; without, it is an error. The checks
    apply to the joined path: ``base`` (a project directory) is as untrusted as the value.
    """
    text = _typed(fieldname, value, str, "a path")
    if not text:
        raise SpecError(fieldname, "is empty", "give an absolute path")
    path = PurePosixPath(text)
    if not path.is_absolute():
        if base is None:
            raise SpecError(
                fieldname, f"{text!r} is a relative path", "give an absolute path, starting with /"
            )
        path = PurePosixPath(base) / path
    shown = repr(text) if str(path) == text else f"{text!r} (in {base!r})"
    try:
        escape.check_text(str(path))
    except ValueError as err:
        raise SpecError(fieldname, f"{shown} {err}") from None
    bad = sorted(set(str(path)) & _PATH_FORBIDDEN)
    if bad:
        raise SpecError(
            fieldname,
            f"{shown} contains {''.join(bad)!r}",
            "use a path without spaces, quotes, backslashes, ';', '{}', '$' or '`'",
        )
    parts: list[str] = []
    for part in path.parts[1:]:
        if part == "..":
            raise SpecError(fieldname, f"{shown} contains '..'", "give the path without '..'")
        if part != ".":
            parts.append(part)
    normal = "/" + "/".join(parts)
    # systemd refuses longer paths (path_is_valid(): NAME_MAX per component, below PATH_MAX).
    if len(normal.encode()) >= PATH_MAX or any(len(p.encode()) > NAME_MAX for p in parts):
        raise SpecError(
            fieldname,
            f"{shown} is too long for systemd",
            f"use at most {NAME_MAX} bytes per path component, {PATH_MAX - 1} in all",
        )
    return normal


def check_file_path(fieldname: str, value: object, base: str | None = None) -> str:
    """:func:`check_path` for a file (an interpreter, a key, a socket): not ``/``."""
    path = check_path(fieldname, value, base)
    if path == "/":
        raise SpecError(fieldname, "'/' is a directory, not a file", "name the file")
    return path


def parse_listener(fieldname: str, value: object) -> Listener:
    """``PORT``, ``HOST:PORT``, ``[V6]:PORT`` or ``/unix/path``, optionally ``=NAME``; or a table
    with ``address``, ``name`` and ``tls``."""
    name: str | None = None
    tls: bool | None = None
    if isinstance(value, Mapping):
        _no_unknown(fieldname, value, {"address", "name", "tls"})
        if "address" not in value:
            raise SpecError(f"{fieldname}.address", "is missing", 'add address = "8080"')
        address = _typed(f"{fieldname}.address", value["address"], str, "an address")
        if "name" in value:
            name = _typed(f"{fieldname}.name", value["name"], str, "a socket name")
        if "tls" in value:
            tls = _bool(f"{fieldname}.tls", value["tls"])
    else:
        address = _typed(
            fieldname,
            value,
            str,
            'an address like "8080", "127.0.0.1:8080", "[::1]:8080" or "/run/app.sock"',
        )
        if "=" in address:
            address, name = address.rsplit("=", 1)
    if name is not None and not re.fullmatch(_FDNAME, name):
        raise SpecError(
            fieldname,
            f"socket name {name!r} is invalid",
            "use up to 64 letters, digits, '_', '.', '-'",
        )
    if tls is None:
        tls = name == "https"
    if name is None:
        name = "https" if tls else "http"
    if address.startswith("/"):
        path = check_file_path(fieldname, address)
        if len(path.encode()) > SUN_PATH_MAX:
            raise SpecError(
                fieldname,
                f"unix socket path is longer than {SUN_PATH_MAX} bytes",
                "use a shorter path, e.g. under /run",
            )
        return Listener(name, tls, path=path)
    host: str | None = None
    port_text = address
    if address.startswith("["):
        close = address.find("]:")
        if close < 0:
            raise SpecError(fieldname, f"{address!r} is not [IPV6]:PORT")
        host, port_text = address[1:close], address[close + 2 :]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise SpecError(fieldname, f"{host!r} is not an IPv6 address") from None
    elif ":" in address:
        host, port_text = address.rsplit(":", 1)
        try:
            ipaddress.IPv4Address(host)
        except ValueError:
            hint = (
                "write IPv6 addresses in brackets, e.g. [::1]:8080"
                if ":" in host
                else "systemd listens on IP addresses, not host names"
            )
            raise SpecError(fieldname, f"{host!r} is not an IPv4 address", hint) from None
    if not port_text.isascii() or not port_text.isdigit():
        raise SpecError(
            fieldname,
            f"{address!r} is not PORT, HOST:PORT, [V6]:PORT or an absolute unix socket path",
        )
    port = int(port_text)
    if not 1 <= port <= 65535:
        raise SpecError(fieldname, f"port {port} is out of range", "use 1 to 65535")
    return Listener(name, tls, port=port, host=host)


def _unit_name(fieldname: str, value: object) -> str:
    name: str = _typed(fieldname, value, str, "a unit name")
    try:
        escape.check_unit_stem(name)
    except ValueError as err:
        raise SpecError(fieldname, f"{name!r} {err}", 'e.g. name = "my-app"') from None
    return name


def _entry(fieldname: str, value: object) -> str:
    entry: str = _typed(fieldname, value, str, "MODULE:OBJECT")
    if not is_entry(entry):
        raise SpecError(
            fieldname,
            f"{entry!r} is not MODULE:OBJECT",
            'e.g. entry = "hello:Root" or "myapp.wsgi:application"',
        )
    return entry


def _listeners(fieldname: str, value: object) -> tuple[Listener, ...]:
    items = _typed(fieldname, value, list, "a list of addresses")
    if not items:
        raise SpecError(fieldname, "is empty", 'add at least one address, e.g. listen = ["8080"]')
    listeners = tuple(parse_listener(f"{fieldname}[{i}]", item) for i, item in enumerate(items))
    seen: dict[str, bool] = {}
    addresses: set[str] = set()
    for i, listener in enumerate(listeners):
        if listener.address in addresses:
            raise SpecError(f"{fieldname}[{i}]", f"{listener.address} is listed twice")
        addresses.add(listener.address)
        if seen.setdefault(listener.name, listener.tls) != listener.tls:
            raise SpecError(
                f"{fieldname}[{i}]",
                f"socket {listener.name!r} mixes TLS and plain listeners",
                "give TLS listeners their own name, e.g. =https",
            )
    return listeners


_IP_KEYWORDS = ("any", "localhost", "link-local", "multicast")


def _outbound(fieldname: str, value: object) -> tuple[str, ...]:
    """Destinations for ``IPAddressAllow=`` (systemd.resource-control(5)): IP addresses,
    networks in CIDR notation, or any/localhost/link-local/multicast."""
    items = _typed(fieldname, value, list, 'a list like ["10.0.0.0/8", "any"]')
    allowed = []
    for i, item in enumerate(items):
        text = _typed(f"{fieldname}[{i}]", item, str, "an address or network")
        if text not in _IP_KEYWORDS:
            try:
                text = str(ipaddress.ip_network(text, strict=False))
            except ValueError:
                raise SpecError(
                    f"{fieldname}[{i}]",
                    f"{text!r} is not an IP address or network",
                    "use e.g. 10.0.0.5, 10.0.0.0/8, 2001:db8::/32 or any",
                ) from None
        allowed.append(text)
    return tuple(allowed)


def _environment(fieldname: str, value: object) -> tuple[tuple[str, str], ...]:
    table = _typed(fieldname, value, dict, "a table of NAME = value")
    pairs = []
    for key, item in table.items():
        if not is_identifier(key):
            raise SpecError(
                f"{fieldname}.{key}",
                "is not a valid variable name",
                "use letters, digits and '_', not starting with a digit",
            )
        text = _typed(f"{fieldname}.{key}", item, str, "a string")
        check_text_length(f"{fieldname}.{key}", text)
        try:
            escape.check_text(text)
        except ValueError as err:
            raise SpecError(f"{fieldname}.{key}", str(err)) from None
        pairs.append((key, text))
    return tuple(pairs)


def _user(fieldname: str, value: object) -> tuple[str | None, str | None]:
    text = _typed(fieldname, value, str, 'a user name, "user:group", or "" for DynamicUser')
    if not text:
        return None, None
    user, _, group = text.partition(":")
    for part in (user, group) if group else (user,):
        if not re.fullmatch(_USER, part):
            raise SpecError(
                fieldname,
                f"{part!r} is not a valid user or group name",
                "use lower-case letters, digits, '_' and '-', at most 31 characters",
            )
    if user == "root" or group == "root":
        raise SpecError(
            fieldname,
            "refusing to run the app as root",
            'leave user = "" for DynamicUser=yes, or name an unprivileged user',
        )
    return user, group or None


def _domain(fieldname: str, value: object) -> str:
    text: str = _typed(fieldname, value, str, "a domain name")
    if text != "_" and (len(text) > 253 or not re.fullmatch(_DOMAIN, text)):
        raise SpecError(fieldname, f"{text!r} is not a domain name")
    return text.lower()


def _no_unknown(fieldname: str, table: Mapping[str, object], known: set[str]) -> None:
    for key in table:
        if key not in known:
            where = f"{fieldname}.{key}" if fieldname else key
            # Typos (wokers, lisen, pyhton) keep most letters, not the first three.
            import difflib  # only to suggest a name for an unknown key: not on every start

            close = difflib.get_close_matches(str(key), sorted(known), n=1)
            hint = (
                f"did you mean {close[0]!r}?"
                if close
                else f"known keys: {', '.join(sorted(known))}"
            )
            raise SpecError(where, "unknown key", hint)


def _tls_host(fieldname: str, value: object) -> str:
    """A certificate host name, checked now rather than when the renewal timer first runs."""
    from cpsysd.tls.names import parse_host  # pure, no cryptography; only [tls] hosts need it

    text = _text(fieldname, value)
    try:
        parse_host(text)
    except CpsysdError as err:
        raise SpecError(fieldname, err.message, err.hint) from None
    return text


def _tls_hosts(fieldname: str, value: object) -> tuple[str, ...]:
    hosts = _typed(fieldname, value, list, "a list of host names")
    return tuple(_tls_host(f"{fieldname}[{i}]", host) for i, host in enumerate(hosts))


def _server_names(fieldname: str, value: object) -> tuple[str, ...]:
    names = _typed(fieldname, value, list, "a list of domains")
    return tuple(_domain(f"{fieldname}[{i}]", name) for i, name in enumerate(names)) or ("_",)


def _static(fieldname: str, value: object, base: str) -> tuple[tuple[str, str], ...]:
    static = _typed(fieldname, value, dict, 'a table of "/url/" = "/dir"')
    for prefix in static:
        if not prefix.startswith("/") or set(prefix) & (_PATH_FORBIDDEN | {"~"}):
            raise SpecError(
                fieldname, f"URL prefix {prefix!r} must start with / and have no spaces or quotes"
            )
    return tuple(
        (prefix, check_path(f"{fieldname}.{prefix}", path, base)) for prefix, path in static.items()
    )


def _upstreams(fieldname: str, value: object) -> tuple[str, ...]:
    upstream = _typed(fieldname, value, list, 'a list of "host:port"')
    backends = []
    for i, item in enumerate(upstream):
        listener = parse_listener(f"{fieldname}[{i}]", item)
        if listener.is_unix or listener.host is None:
            raise SpecError(f"{fieldname}[{i}]", "needs HOST:PORT", 'e.g. "10.0.0.2:8080"')
        backends.append(listener.address)
    return tuple(backends)


def _body_size(fieldname: str, value: object) -> str:
    size: str = _typed(fieldname, value, str, 'a size like "10m"')
    if not re.fullmatch(r"[0-9]+[kKmMgG]?", size):
        raise SpecError(fieldname, f"{size!r} is not a size like 10m")
    return size


def _health_path(fieldname: str, value: object) -> str:
    path: str = _typed(fieldname, value, str, 'a URL path like "/health"')
    # Sent as a request line in-process: no spaces, controls or a scheme and host.
    if not re.fullmatch(r"/[A-Za-z0-9_.~/?=&%+-]*", path):
        raise SpecError(fieldname, f"{path!r} is not a URL path", 'e.g. health_path = "/health"')
    return path


def _vhosts(fieldname: str, value: object) -> tuple[tuple[str, str], ...]:
    table = _typed(fieldname, value, dict, 'a table of "domain" = "/path"')
    pairs = []
    for domain, prefix in table.items():
        _domain(f"{fieldname}.{domain}", domain)
        text = _typed(f"{fieldname}.{domain}", prefix, str, "a path prefix")
        if not re.fullmatch(r"(/[A-Za-z0-9_.~-]+)*/?", text) or not text.startswith("/"):
            raise SpecError(f"{fieldname}.{domain}", f"{text!r} is not a path prefix like /blog")
        pairs.append((domain.lower(), text.rstrip("/") or "/"))
    return tuple(pairs)
