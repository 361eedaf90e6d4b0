"""THE table of ``cpsysd.toml`` fields: each key once, with its TOML type, default, checker,
meaning and what ``cpsysd init`` writes for it.

Everything else is derived from :data:`FIELDS`: the known keys and the parsing with defaults
(:mod:`cpsysd.description.load`, which adds the rules between fields), the resolved description
``install`` writes (:mod:`cpsysd.description.toml`), ``init``'s commented file
(:mod:`cpsysd.description.initfile`), the README's field table and the ``--help`` of the init flags
that set a field (:mod:`cpsysd.description.docs`). Adding a field that only reaches a unit
directive is a row here, an attribute in :mod:`cpsysd.description.model` and a template line.

``cpsysd serve`` imports this at every start: the rows are named tuples, built in C, because
31 records (:mod:`cpsysd.records`, whose ``__init__`` runs in Python) cost it 0.45 ms; nothing
here is heavier than :mod:`cpsysd.description.checks`.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping
from enum import StrEnum
from typing import Any

from cpsysd.description import acme, checks, resources
from cpsysd.description.model import (
    AcmeChallenge,
    AppSpec,
    Hardening,
    Kind,
    Listener,
    NginxConfig,
    Restart,
    TLSConfig,
    WorkerMode,
)


class _Required:
    """The default of a field the description must give."""

    def __repr__(self) -> str:
        return "REQUIRED"


REQUIRED: Any = _Required()


class Derived:
    """A default computed while parsing: ``make(fields parsed so far, the description's dir)``."""

    __slots__ = ("doc", "make")

    def __init__(self, doc: str, make: Callable[[Mapping[str, Any], str], object]) -> None:
        object.__setattr__(self, "doc", doc)  # how the README, init and --help say it
        object.__setattr__(self, "make", make)

    doc: str
    make: Callable[[Mapping[str, Any], str], object]

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"Derived is immutable: cannot set {name!r}")


class Field:
    """One key of the description (top level, or of the ``[tls]``/``[nginx]`` sub-table).

    Immutable, but not a :func:`~cpsysd.records.record` nor a NamedTuple: building 31 of those
    at import cost ``cpsysd serve`` 0.45 ms (a record's ``__init__`` loops in Python) or 0.6 ms
    (a NamedTuple class is compiled with ``exec``); this plain one costs about 0.1 ms."""

    __slots__ = (
        "attribute",
        "base",
        "check",
        "choices",
        "comment",
        "default",
        "enabled",
        "example",
        "fields",
        "help",
        "high",
        "key",
        "low",
        "missing",
        "path",
        "record",
        "toml",
        "write",
    )  # fmt: skip
    key: str
    toml: str  # the TOML type: string, integer, boolean, array, table
    help: str  # the meaning, as the README and --help say it (Markdown)
    comment: str  # what init writes after it
    default: Any  # a TOML value, REQUIRED, a Derived, or None: absent (attribute None)
    example: Any  # init's value where the default is none to show (None: the default)
    enabled: bool  # init writes it enabled, else commented out
    low: int  # integers: the range
    high: int
    choices: type[StrEnum] | None
    path: str  # "file" or "directory": an absolute, normalised path
    base: str  # a relative path is taken relative to "workdir" or "description"; "": refused
    check: Callable[[str, Any, str], Any] | None  # (field name, value, workdir) -> parsed
    write: Callable[[Any], Any] | None  # the parsed record -> its TOML value (write-back)
    attribute: str  # on the model, when not the key
    fields: tuple[Field, ...]  # a sub-table's own fields
    record: Callable[..., Any] | None  # a sub-table's model class
    missing: str  # the hint when a REQUIRED field is missing

    def __init__(
        self,
        key: str,
        toml: str,
        help: str,
        comment: str,
        default: Any = None,
        example: Any = None,
        enabled: bool = True,
        *,
        low: int = 0,
        high: int = 0,
        choices: type[StrEnum] | None = None,
        path: str = "",
        base: str = "",
        check: Callable[[str, Any, str], Any] | None = None,
        write: Callable[[Any], Any] | None = None,
        attribute: str = "",
        fields: tuple[Field, ...] = (),
        record: Callable[..., Any] | None = None,
        missing: str = "",
    ) -> None:
        values = locals()
        for slot in self.__slots__:
            object.__setattr__(self, slot, values[slot])

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"Field is immutable: cannot set {name!r}")

    @property
    def name(self) -> str:
        """The model attribute the parsed value goes to."""
        return self.attribute or self.key

    def parse(self, fieldname: str, value: object, base: str | None) -> Any:
        """The checked value of a scalar field (``base``: where a relative path points)."""
        if self.check is not None:
            return self.check(fieldname, value, base or "")
        if self.toml == "integer":
            return checks._int(fieldname, value, self.low, self.high)
        if self.toml == "boolean":
            return checks._bool(fieldname, value)
        if self.choices is not None:
            return checks._choice(fieldname, value, self.choices)
        if self.path == "file":
            return checks.check_file_path(fieldname, value, base)
        if self.path == "directory":
            return checks.check_path(fieldname, value, base)
        return checks._text(fieldname, value)


def _plain(check: Callable[[str, Any], Any]) -> Callable[[str, Any, str], Any]:
    return lambda fieldname, value, _base: check(fieldname, value)


def _write_user(spec: AppSpec) -> str:
    return f"{spec.user}:{spec.group}" if spec.group else (spec.user or "")


def _write_listener(listener: Listener) -> dict[str, Any]:
    return {"address": listener.address, "name": listener.name, "tls": listener.tls}


def _write_listen(spec: AppSpec) -> list[dict[str, Any]]:
    return [_write_listener(listener) for listener in spec.listeners]


_PEM = "name the PEM file, e.g. cpsysd cert selfsigned writes one"

TLS_FIELDS = (
    Field("cert", "string", "certificate (chain) PEM file", "certificate (chain) PEM",
          REQUIRED, "/etc/cpsysd/tls/cert.pem", path="file", base="workdir", missing=_PEM),
    Field("key", "string", "private key PEM file (0600; handed over with `LoadCredential=`)",
          "private key PEM (0600)", REQUIRED, "/etc/cpsysd/tls/key.pem", path="file",
          base="workdir", missing=_PEM),
    Field("chain", "string", "intermediate certificates PEM file", "intermediate certificates",
          None, "/etc/cpsysd/tls/chain.pem", False, path="file", base="workdir"),
    Field("passphrase_file", "string", "the passphrase of an encrypted key, as a credential too",
          "for an encrypted key", None, "/root/tls.pass", False, path="file", base="workdir"),
    Field("renew_days", "integer", "re-issue this many days before expiry "
          "(`NAME-cert-renew.timer`); 0: no renewal; with `acme`, the latest point",
          "re-issue this many days before expiry (a timer)", 0, 30, False, low=0, high=365),
    Field("hosts", "array", "subjectAltNames to renew for; `[]`: the certificate's own",
          "names to renew for", [], ["localhost"], False, check=_plain(checks._tls_hosts)),
    Field("ca_dir", "string", "renew from this local CA; none: self-signed renewal",
          "renew from this CA", None, "/etc/cpsysd/ca", False, path="directory", base="workdir"),
    Field("ca_passphrase_file", "string", "the passphrase of the `ca_dir` key (renewal only)",
          "for an encrypted CA key", None, "/root/ca.pass", False, path="file", base="workdir"),
    Field("acme", "string", '`"letsencrypt"`, `"letsencrypt-staging"` or an ACME directory URL: '
          "the certificate for `hosts` comes from that CA, issued at `install` and renewed by "
          "`NAME-cert-renew.timer` inside the CA's renewal window (ARI) or else at two thirds "
          "of its lifetime", "get the certificate from "
          "this ACME CA", None, "letsencrypt-staging", False, check=_plain(acme.check_directory)),
    Field("acme_email", "string", "the ACME account's contact (expiry notices)",
          "ACME account contact", None, "ops@example.org", False, check=_plain(acme.check_email)),
    Field("acme_challenge", "string", "`http-01`: answered on the plain `http` listener (or "
          "nginx) from `acme_challenge_dir`, before the app sees the request; `tls-alpn-01`: "
          "answered in the TLS handshake of the `https` listener (port 443; not behind nginx)",
          "how the CA checks the names", "http-01", None, False, choices=AcmeChallenge),
    Field("acme_ca_bundle", "string", "CA file trusted for the ACME server's own HTTPS (a "
          "private CA such as pebble); none: the system's", "trust for a private ACME server",
          None, "/etc/cpsysd/acme-server-ca.pem", False, path="file", base="workdir"),
    Field("acme_account_key", "string", "the ACME account key (root's, 0600, never given to "
          "the app); none: `acme-account.pem` beside `key`", "ACME account key (0600)", None,
          "/etc/cpsysd/tls/acme-account.pem", False, path="file", base="workdir"),
    Field("acme_challenge_dir", "string", "where the renewal job writes challenge responses; "
          "none: `/run/cpsysd/acme/NAME`", "ACME challenge responses", None,
          "/run/cpsysd/acme/APP", False,
          path="directory", base="workdir"),
    Field("acme_status_dir", "string", "where the renewal job records why renewals fail "
          "(`failure`, shown in the app's STATUS=); none: `/run/cpsysd/acme-status/NAME`",
          "renewal failure record", None, "/run/cpsysd/acme-status/APP", False,
          path="directory", base="workdir"),
)  # fmt: skip

NGINX_FIELDS = (
    Field("server_name", "array", "the site's `server_name`s; `_` matches any",
          "nginx server_name", ["_"], ["example.org"], False, attribute="server_names",
          check=_plain(checks._server_names)),
    Field("listen", "integer", "the port nginx listens on", "nginx listen port", 80, None, False,
          low=1, high=65535),
    Field("static", "table", '`"/url/" = "/dir"`: static files nginx serves itself',
          "URL prefix = directory", {}, {"/static/": "static"}, False, base="workdir",
          check=checks._static),
    Field("upstream", "array", '`"host:port"` backends, instead of the local instances',
          "other hosts' instances", [], ["10.0.0.2:8080"], False, check=_plain(checks._upstreams)),
    Field("tls_cert", "string", "certificate nginx terminates TLS with (with `tls_key`)",
          "TLS at nginx", None, "/etc/ssl/APP/cert.pem", False, path="directory", base="workdir"),
    Field("tls_key", "string", "its private key (with `tls_cert`)", "TLS at nginx", None,
          "/etc/ssl/APP/key.pem", False, path="directory", base="workdir"),
    Field("client_max_body_size", "string", "largest request body nginx passes on",
          "nginx client_max_body_size", "10m", None, False, check=_plain(checks._body_size)),
)  # fmt: skip


def _description(values: Mapping[str, Any], _base: str) -> str:
    return f"{values['name']} (served by cpsysd)"


# The order is the parsing order (a field may depend on one above it: description on name,
# relative paths on working_directory), the README's and init's; sub-tables come last.
FIELDS = (
    Field("name", "string", "unit name stem (`NAME.service`); letters, digits, `-_.:`",
          "unit name stem: NAME.service, NAME.socket", REQUIRED, "hello",
          check=_plain(checks._unit_name), missing='add name = "hello"'),
    Field("entry", "string", "`module:Object` — a CherryPy root (class or instance) or a WSGI "
          "callable", "MODULE:OBJECT, a CherryPy root or a WSGI callable", REQUIRED,
          "hello:Root", check=_plain(checks._entry), missing='add entry = "hello:Root"'),
    Field("kind", "string", "how `entry` is served; `auto` tells by looking at it; `wsgi` "
          "without a `config` is served without importing CherryPy (a faster cold start)",
          "auto, cherrypy or wsgi", "auto", choices=Kind),
    Field("description", "string", "`Description=` of the units", "Description= of the units",
          Derived("`NAME (served by cpsysd)`", _description)),
    Field("working_directory", "string", "the app is imported from here",
          "the app is imported from here", Derived("the description's directory",
          lambda _values, base: base), "/srv/APP", False, path="directory", base="description"),
    Field("config", "string", "CherryPy config file, relative to `working_directory`; re-read "
          "on reload", "CherryPy config, relative to working_directory", None, "app.conf", False,
          path="file", base="workdir"),
    Field("python", "string", "absolute path of the interpreter with the app and cpsysd "
          "installed", "interpreter with the app and cpsysd", Derived(
          "the interpreter running cpsysd; `init` writes the one that found the app",
          lambda _values, _base: sys.executable),
          "/opt/APP/venv/bin/python", False, path="file"),
    Field("user", "string", '`"user"` or `"user:group"`; `""`: `DynamicUser=yes`; `root` is '
          "refused", '"" = DynamicUser=yes; or "user" / "user:group"', "",
          check=_plain(checks._user), write=_write_user),
    Field("listen", "array", "`PORT`, `HOST:PORT`, `[V6]:PORT`, `/unix/path`, each optionally "
          "`=NAME`; a socket named `https` serves TLS; or tables `{address, name, tls}`",
          "PORT, HOST:PORT, [V6]:PORT, /unix/path; =NAME names the socket ('https' = TLS)",
          ["8080"], attribute="listeners", check=_plain(checks._listeners), write=_write_listen),
    Field("network", "boolean", "`false`: no outbound connections, `PrivateNetwork=yes` "
          "(sockets still come from systemd)", "false: no outbound connections", True),
    Field("outbound", "array", "with `network = true`: destinations beyond localhost "
          '(`IPAddressAllow=`), e.g. `["10.0.0.0/8"]` or `["any"]`',
          "with network: destinations beyond localhost", [], ["10.0.0.0/8"], False,
          check=_plain(checks._outbound)),
    Field("watchdog_sec", "integer", "`WatchdogSec=`; pings only while the app answers (0 = off)",
          "restart the app when it stops answering this long", 30, low=0, high=3600),
    Field("idle_stop_sec", "integer", "scale to zero: after this long with no open connection "
          "the app exits 0 (`STOPPING=1`), its sockets keep listening and the next connection "
          "starts it again; each worker on its own; 0 = off, else at least 2; ignored when "
          "`cpsysd serve` runs without socket activation; not with `restart = \"always\"`",
          "exit after this long with no connection, the next starts it; only under systemd",
          0, 300, False, low=0, high=86400),
    Field("timeout_stop_sec", "integer", "how long in-flight requests may finish on stop",
          "how long in-flight requests may finish on stop", 30, low=1, high=3600),
    Field("health_path", "string", "READY=1 only after the app answered a GET of this path "
          "with 2xx, asked in-process before it accepts a connection (the health gate of "
          "`cpsysd deploy`); none: no check", "the health gate: READY=1 only once this answers "
          "2xx", None, "/health", False, check=_plain(checks._health_path)),
    Field("restart", "string", "`Restart=`", "systemd Restart=", "on-failure", choices=Restart),
    Field("hardening", "string", "`relaxed` drops MemoryDenyWriteExecute, the syscall filter and "
          "PrivateUsers (JITs, cffi callbacks)", "strict, or relaxed (JITs, cffi callbacks)",
          "strict", choices=Hardening),
    Field("memory_high", "string", "`MemoryHigh=`: above this the kernel throttles and reclaims "
          "the app's memory; a size like `512M` or `infinity`", "throttle above this much memory",
          "512M", check=resources.memory_size),
    Field("memory_max", "string", "`MemoryMax=`: the app is killed (and restarted) above this; "
          "at least `memory_high`", "killed above this much memory", "768M",
          check=resources.memory_size),
    Field("tasks_max", "integer", "`TasksMax=`: threads and processes of the app together",
          "threads + processes at most", 256, low=16, high=4194304),
    Field("limit_nofile", "integer", "`LimitNOFILE=`: open files and connections; past it the "
          "app pauses accepting", "open files and connections at most", 65536, low=256,
          high=1048576),
    Field("state_directory", "boolean", "the one place the app may write under "
          "`ProtectSystem=strict` (SQLite, file sessions, uploads): a private `/var/lib/NAME` "
          "(`StateDirectory=`, mode 0700) shared by all workers, its path in `$STATE_DIRECTORY`; "
          "`cpsysd serve` without systemd sets `$STATE_DIRECTORY` too (`/var/lib/NAME` as root, "
          "else `~/.local/state/NAME`) unless it is set; see docs/recipes.md",
          "a private writable /var/lib/NAME, in $STATE_DIRECTORY", False),
    Field("workers", "integer", "N instances (template units; under supervisord `numprocs`)",
          "N processes (template units NAME@.service)", 1, low=1, high=256),
    Field("worker_mode", "string", "`reuseport`: the instances share each port; `ports`: "
          "instance i listens on port + i - 1", "reuseport, or ports (one port each)",
          "reuseport", choices=WorkerMode),
    Field("environment_file", "string", "`EnvironmentFile=` (absolute)", "EnvironmentFile=",
          None, "/etc/default/APP", False, path="file"),
    Field("environment", "table", "`NAME = value` for the app, written by `install` to a root-only "
          "file (`EnvironmentFile=`); secrets belong in `credentials`",
          "variables for the app; secrets go in credentials", {},
          {"DATABASE_URL": "postgresql:///app"}, False, check=_plain(checks._environment)),
    Field("credentials", "table", '`NAME = "FILE"`: `LoadCredential=`; the app reads one with '
          '`cpsysd.credential("NAME")`, no other service or user can; FILE stays root\'s',
          "secrets: the app calls cpsysd.credential(NAME)", {},
          {"db-password": "/etc/cpsysd/APP/db-password"}, False, base="workdir",
          check=resources.credentials_table),
    Field("vhosts", "table", '`"domain" = "/path"`; `"*.example.org"` wildcards; matched like '
          "nginx's `server_name` (case, port and trailing dot ignored, exact names first, then "
          "the longest wildcard)", "domain = path prefix of the root", {},
          {"blog.example.org": "/blog"}, False, check=_plain(checks._vhosts)),
    Field("nginx", "table", "a reverse proxy site in front of the app, for `cpsysd nginx`",
          "cpsysd nginx -c THIS_FILE", None, enabled=False, fields=NGINX_FIELDS,
          record=NginxConfig),
    Field("tls", "table", "certificate files, passed with `LoadCredential=`; a TLS listener "
          "needs them", "passed to the service with LoadCredential=", None, enabled=False,
          fields=TLS_FIELDS, record=TLSConfig),
)  # fmt: skip


def field(dotted: str) -> Field:
    """The field ``name`` or ``tls.cert``."""
    section, _, key = dotted.rpartition(".")
    fields: tuple[Field, ...] = FIELDS
    if section:
        fields = next(f.fields for f in FIELDS if f.key == section)
    return next(f for f in fields if f.key == key)
