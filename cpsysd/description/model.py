"""The parsed app description: enums and frozen dataclasses (see :mod:`cpsysd.description.load`).

The classes are made with :func:`cpsysd.records.record`: frozen dataclasses whose methods are
not compiled at import, which ``cpsysd serve`` (every socket-activated start) would pay for."""

from __future__ import annotations

from dataclasses import field
from enum import StrEnum

from cpsysd.records import record


class Kind(StrEnum):
    """How the entry point is served: a CherryPy root object or a plain WSGI callable."""

    AUTO = "auto"
    CHERRYPY = "cherrypy"
    WSGI = "wsgi"


class Restart(StrEnum):
    """systemd.service(5) ``Restart=`` values."""

    NO = "no"
    ON_SUCCESS = "on-success"
    ON_FAILURE = "on-failure"
    ON_ABNORMAL = "on-abnormal"
    ON_WATCHDOG = "on-watchdog"
    ON_ABORT = "on-abort"
    ALWAYS = "always"


class Hardening(StrEnum):
    """``strict``: the full sandbox (exposure about 0.2-0.9). ``relaxed``: without
    MemoryDenyWriteExecute, the system-call filter and PrivateUsers, for apps that JIT or use
    cffi callbacks."""

    STRICT = "strict"
    RELAXED = "relaxed"


class WorkerMode(StrEnum):
    """``reuseport``: N instances share each port (SO_REUSEPORT). ``ports``: instance i listens
    on port + i - 1, for an nginx upstream."""

    REUSEPORT = "reuseport"
    PORTS = "ports"


class AcmeChallenge(StrEnum):
    """How an ACME CA checks that the app controls a name (RFC 8555 section 8.3, RFC 8737)."""

    HTTP_01 = "http-01"
    TLS_ALPN_01 = "tls-alpn-01"


# Where the renewal job puts http-01 responses and the runtime (and nginx) read them, unless
# [tls] acme_challenge_dir says otherwise: systemd makes it (RuntimeDirectory= of the job).
ACME_CHALLENGE_ROOT = "/run/cpsysd/acme"
# Where the renewal job says why renewals fail (NAME/failure, world-readable like STATUS=
# itself) and the runtime reads it for its STATUS=, unless [tls] acme_status_dir says
# otherwise: made by systemd (RuntimeDirectory= of the job, again).
ACME_STATUS_ROOT = "/run/cpsysd/acme-status"


@record
class Listener:
    """One listening socket: TCP (``host`` None means every address, dual-stack) or unix."""

    name: str
    tls: bool
    port: int | None = None
    host: str | None = None
    path: str | None = None

    @property
    def is_unix(self) -> bool:
        return self.path is not None

    @property
    def address(self) -> str:
        """The address as written in the description and in ``ListenStream=``."""
        if self.path is not None:
            return self.path
        if self.host is None:
            return str(self.port)
        if ":" in self.host:
            return f"[{self.host}]:{self.port}"
        return f"{self.host}:{self.port}"

    def with_port(self, port: int) -> Listener:
        return Listener(self.name, self.tls, port, self.host, self.path)


@record
class TLSConfig:
    """Certificate and key files, handed to the service with ``LoadCredential=``."""

    cert: str
    key: str
    chain: str | None = None
    renew_days: int = 0  # re-issue this many days before expiry; 0 means no renewal timer
    ca_dir: str | None = None  # local CA that re-issues; None means a self-signed renewal
    hosts: tuple[str, ...] = ()  # subjectAltNames for renewal
    passphrase_file: str | None = None  # the encrypted key's passphrase, as a credential too
    ca_passphrase_file: str | None = None  # the ca_dir key's passphrase, for the renewal job only
    acme: str | None = None  # an ACME directory URL: the certificate comes from that CA
    acme_email: str | None = None  # the account's contact
    acme_challenge: AcmeChallenge = AcmeChallenge.HTTP_01
    acme_ca_bundle: str | None = None  # trust for a private ACME server's own HTTPS (pebble)
    acme_account_key: str | None = None  # None: acme-account.pem beside the key
    acme_challenge_dir: str | None = None  # None: ACME_CHALLENGE_ROOT/NAME
    acme_status_dir: str | None = None  # None: ACME_STATUS_ROOT/NAME

    @property
    def account_key_path(self) -> str:
        """The ACME account key: root's, 0600, never handed to the app."""
        import os.path

        return self.acme_account_key or os.path.join(os.path.dirname(self.key), "acme-account.pem")


@record
class NginxConfig:
    """A reverse proxy site in front of the app (``cpsysd nginx``)."""

    server_names: tuple[str, ...] = ("_",)
    listen: int = 80
    static: tuple[tuple[str, str], ...] = ()  # (url prefix, directory)
    upstream: tuple[str, ...] = ()  # "host:port"; replaces the local instances
    tls_cert: str | None = None
    tls_key: str | None = None
    client_max_body_size: str = "10m"


@record
class AppSpec:
    """A validated app description. Paths are absolute; defaults are filled in."""

    name: str
    entry: str
    python: str
    working_directory: str
    description: str
    kind: Kind = Kind.AUTO
    config: str | None = None
    user: str | None = None  # None: DynamicUser=yes
    group: str | None = None
    environment: tuple[tuple[str, str], ...] = ()
    environment_file: str | None = None
    credentials: tuple[tuple[str, str], ...] = ()  # (name, file): LoadCredential=
    listeners: tuple[Listener, ...] = (Listener("http", False, 8080),)  # listen = ["8080"]
    network: bool = True
    outbound: tuple[str, ...] = ()  # IPAddressAllow= beyond localhost, when network is true
    watchdog_sec: int = 30
    idle_stop_sec: int = 0  # 0: never; else exit 0 after this long with no connection
    timeout_stop_sec: int = 30
    health_path: str | None = None  # READY=1 only after the app answered it 2xx in-process
    restart: Restart = Restart.ON_FAILURE
    hardening: Hardening = Hardening.STRICT
    state_directory: bool = False
    memory_high: str = "512M"  # MemoryHigh=
    memory_max: str = "768M"  # MemoryMax=
    tasks_max: int = 256
    limit_nofile: int = 65536
    workers: int = 1
    worker_mode: WorkerMode = WorkerMode.REUSEPORT
    tls: TLSConfig | None = None
    nginx: NginxConfig | None = None
    vhosts: tuple[tuple[str, str], ...] = ()  # (domain, path prefix of the root)
    source: str | None = field(default=None, compare=False)  # the file it was read from

    @property
    def acme_challenge_dir(self) -> str | None:
        """Where the challenge responses are (http-01 tokens, or the key authorizations of
        tls-alpn-01 in its ``tls-alpn-01/`` subdirectory), for an ACME certificate."""
        tls = self.tls
        if tls is None or tls.acme is None:
            return None
        return tls.acme_challenge_dir or f"{ACME_CHALLENGE_ROOT}/{self.name}"

    @property
    def acme_failure_path(self) -> str | None:
        """The renewal job's failure record, for an ACME certificate (any challenge)."""
        if self.tls is None or self.tls.acme is None:
            return None
        return f"{self.tls.acme_status_dir or ACME_STATUS_ROOT + '/' + self.name}/failure"

    @property
    def module(self) -> str:
        return self.entry.split(":", 1)[0]

    @property
    def attribute(self) -> str:
        return self.entry.split(":", 1)[1]

    @property
    def fd_names(self) -> tuple[str, ...]:
        """Distinct socket names in order of first appearance: one socket unit each."""
        return tuple(dict.fromkeys(listener.name for listener in self.listeners))
