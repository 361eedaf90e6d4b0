"""What every unit renderer shares: the marker, the sandbox directives, the Jinja2 templates in
``units/`` and the service's escaped values. Render an :class:`~cpsysd.description.model.AppSpec`
into unit-file text through the Jinja2 templates in
``units/``. Pure: no file system writes, no subprocesses. Every value that reaches a template is
escaped here (cpsysd.escape), so templates only lay text out.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from cpsysd import escape
from cpsysd.credentials import (
    CREDENTIAL_CERT,
    CREDENTIAL_CHAIN,
    CREDENTIAL_KEY,
    CREDENTIAL_PASSPHRASE,
)
from cpsysd.description.fields import FIELDS
from cpsysd.description.load import AppSpec, Hardening
from cpsysd.errors import SpecError

if TYPE_CHECKING:
    import jinja2

MARKER = "cpsysd-generated: do not edit, cpsysd install overwrites this file"

# Each line is one directive or a comment explaining the next ones (rendered verbatim).
_SANDBOX_COMMON = (
    "# --- sandbox (systemd.exec(5)); `cpsysd verify` prints the exposure score ---",
    "# No privileges, ever: no capabilities, no setuid, no new privileges through exec.",
    "NoNewPrivileges=yes",
    "CapabilityBoundingSet=",
    "AmbientCapabilities=",
    "RestrictSUIDSGID=yes",
    "# The whole file system read-only, homes and other users' files invisible.",
    "ProtectSystem=strict",
    "ProtectHome=yes",
    "PrivateTmp=yes",
    "PrivateDevices=yes",
    "DevicePolicy=closed",
    "PrivateMounts=yes",
    "# Kernel, clock, cgroups, hostname, other processes: hands off.",
    "ProtectClock=yes",
    "ProtectControlGroups=yes",
    "ProtectKernelLogs=yes",
    "ProtectKernelModules=yes",
    "ProtectKernelTunables=yes",
    "ProtectHostname=yes",
    "ProtectProc=invisible",
    "ProcSubset=pid",
    "RestrictNamespaces=yes",
    "RestrictRealtime=yes",
    "LockPersonality=yes",
    "RemoveIPC=yes",
    "KeyringMode=private",
    "# Files the app creates are its own.",
    "UMask=0077",
    "# Only this machine's native system calls.",
    "SystemCallArchitectures=native",
)
_SANDBOX_STRICT = (
    '# No writable and executable memory (breaks JITs and cffi callbacks: hardening = "relaxed").',
    "MemoryDenyWriteExecute=yes",
    "# The system calls of an ordinary service, minus privileged and resource-control ones.",
    "SystemCallFilter=@system-service",
    "SystemCallFilter=~@privileged @resources",
    "SystemCallErrorNumber=EPERM",
    "# A user namespace of its own: even a root inside would be nobody outside.",
    "PrivateUsers=yes",
)
_NO_NETWORK = (
    "# The app needs no outbound network (network = false): its own empty network namespace.",
    "# The sockets systemd passes in still work; AF_UNIX stays for sd_notify and journald.",
    "PrivateNetwork=yes",
    "IPAddressDeny=any",
    "RestrictAddressFamilies=AF_UNIX",
)
_NETWORK = (
    "# The app may open connections (network = true), but only over IP and unix sockets,",
    "# and only to this machine and the destinations listed in `outbound`. Connections",
    "# accepted on the sockets systemd passes in are not affected.",
    "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6",
    "IPAddressDeny=any",
)
# A user manager cannot apply most namespace options (systemd.exec(5) notes which need root);
# seccomp-based ones work unprivileged once NoNewPrivileges is set.
_SANDBOX_USER = (
    "# --- sandbox for a user manager: the options that work without privileges ---",
    "NoNewPrivileges=yes",
    "RestrictSUIDSGID=yes",
    "RestrictNamespaces=yes",
    "RestrictRealtime=yes",
    "LockPersonality=yes",
    "UMask=0077",
    "SystemCallArchitectures=native",
)


# Where units and resolved descriptions live on a host: the paths the units name and the Debian
# maintainer scripts expect (cpsysd.host.install writes there).
SYSTEM_UNIT_DIR = PurePosixPath("/etc/systemd/system")
VENDOR_UNIT_DIR = PurePosixPath("/lib/systemd/system")
SYSTEM_STATE_DIR = PurePosixPath("/var/lib/cpsysd")


@dataclass(frozen=True)
class RenderOptions:
    """Where the rendered units will live.

    ``description_path``: the description file the service's ``cpsysd serve -c`` reads.
    ``user_mode``: units for ``systemctl --user`` (no DynamicUser, a reduced sandbox).
    ``environment_path``: where ``install`` writes the environment (root-only, see
    :mod:`cpsysd.render.envfile`); the unit then names that file instead of carrying the values.
    None (``verify``, the package targets): ``Environment=`` lines, as before.
    """

    description_path: str
    user_mode: bool = False
    environment_path: str | None = None


def _templates_dir() -> Path:
    here = Path(__file__).resolve().parent.parent  # the cpsysd package
    shipped = here / "units"  # inside the wheel (pyproject force-include)
    return shipped if shipped.is_dir() else here.parent / "units"  # a source checkout


@functools.cache
def _environment() -> jinja2.Environment:
    import jinja2

    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(_templates_dir())),
        undefined=jinja2.StrictUndefined,
        autoescape=False,  # noqa: S701 - unit files, not HTML; values are escaped in this module
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )


def render_template(name: str, **context: Any) -> str:
    """Render one template of ``units/``; also used by the nginx/supervisord/debian renderers."""
    return _environment().get_template(name).render(**context)


def template_source(name: str) -> str:
    """The text of a file of ``units/`` as it is, not rendered: files that are Jinja for
    another program (Ansible's tasks and templates) and must reach it unchanged."""
    env = _environment()
    assert env.loader is not None
    return env.loader.get_source(env, name)[0]


def comment_text(text: str) -> str:
    """Text safe inside a ``#`` comment line: control characters shown as escapes."""
    return escape.escape_specifiers(
        "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in text)
    )


def _field(fieldname: str, fn: Any, *args: Any) -> Any:
    try:
        return fn(*args)
    except ValueError as err:
        raise SpecError(fieldname, str(err)) from None


def socket_unit_name(spec: AppSpec, fd_name: str) -> str:
    """``NAME.socket`` for the first socket name, ``NAME-FDNAME.socket`` for the others."""
    first = spec.fd_names[0]
    return f"{spec.name}.socket" if fd_name == first else f"{spec.name}-{fd_name}.socket"


def exec_start(spec: AppSpec, options: RenderOptions) -> str:
    argv = [spec.python, "-m", "cpsysd", "serve", "-c", options.description_path]
    return str(_field("python", escape.command_line, argv))


def hardening_lines(spec: AppSpec, user_mode: bool) -> tuple[str, ...]:
    """The sandbox directives for ``spec``, with their explaining comments."""
    if user_mode:
        user_lines: tuple[str, ...] = _SANDBOX_USER
        if spec.hardening is Hardening.STRICT:
            user_lines += ("MemoryDenyWriteExecute=yes", "SystemCallFilter=@system-service")
        return user_lines
    lines: tuple[str, ...] = _SANDBOX_COMMON
    if spec.hardening is Hardening.STRICT:
        lines += _SANDBOX_STRICT
    if not spec.network:
        return lines + _NO_NETWORK
    allow = " ".join(dict.fromkeys(("localhost", *spec.outbound)))
    return (*lines, *_NETWORK, f"IPAddressAllow={allow}")


def plain_fields(spec: AppSpec) -> dict[str, object]:
    """The top-level integer, boolean and choice fields by key, for templates as ``field.KEY``:
    digits, a bool or a fixed word need no escaping, so a field that only sets a directive
    needs no line in the context below (strings still go through :mod:`cpsysd.escape` there)."""
    values: dict[str, object] = {}
    for row in FIELDS:
        if row.toml in ("integer", "boolean") or row.choices is not None:
            value = getattr(spec, row.name)
            values[row.key] = value.value if row.choices is not None else value
    return values


def service_context(spec: AppSpec, options: RenderOptions) -> dict[str, Any]:
    """The escaped values service.j2 lays out; reused by the template-unit renderer."""
    credentials = []
    if spec.tls:
        credentials = [f"{CREDENTIAL_CERT}:{spec.tls.cert}", f"{CREDENTIAL_KEY}:{spec.tls.key}"]
        if spec.tls.chain:
            credentials.append(f"{CREDENTIAL_CHAIN}:{spec.tls.chain}")
        if spec.tls.passphrase_file:
            # The runtime unlocks an encrypted key with it; like the key, it never appears in
            # the unit, the environment or the command line.
            credentials.append(f"{CREDENTIAL_PASSPHRASE}:{spec.tls.passphrase_file}")
    # The app's own secrets: names and paths here, the contents only in $CREDENTIALS_DIRECTORY.
    credentials += [f"{name}:{path}" for name, path in spec.credentials]
    environment = [
        _field(f"environment.{k}", escape.quote_assignment, k, v) for k, v in spec.environment
    ]
    environment_files = [spec.environment_file] if spec.environment_file else []
    if spec.environment and options.environment_path:
        environment = []
        # First, so the admin's environment_file still overrides it (later files win).
        environment_files.insert(0, options.environment_path)
    return {
        "marker": MARKER,
        "source": comment_text(spec.source or options.description_path),
        "unit_stem": spec.name,
        "description": _field("description", escape.unit_value, spec.description),
        "description_path": escape.file_url_path(options.description_path),
        "sockets": [socket_unit_name(spec, fd) for fd in spec.fd_names],
        "shared_sockets": [],  # Sockets=: only release units (cpsysd.render.releases)
        "network": spec.network and not options.user_mode,
        "part_of": None,
        "exec_start": exec_start(spec, options),
        "working_directory": escape.escape_specifiers(spec.working_directory),
        "restart": spec.restart.value,
        "watchdog_sec": spec.watchdog_sec,
        "timeout_stop_sec": spec.timeout_stop_sec,
        "environment": environment,
        "environment_files": [escape.escape_specifiers(path) for path in environment_files],
        "credentials": [escape.escape_specifiers(c) for c in credentials],
        "state_directory": spec.state_directory,
        "user": None if options.user_mode else spec.user,
        "group": None if options.user_mode else spec.group,
        "user_mode": options.user_mode,
        "hardening": hardening_lines(spec, options.user_mode),
        "field": plain_fields(spec),
        "memory_high": spec.memory_high,  # checked: digits and a suffix, or "infinity"
        "memory_max": spec.memory_max,
    }


PROTECT_HOME_HIDES = ("/home", "/root", "/run/user")  # ProtectHome=yes, systemd.exec(5)


def protect_home_tree(path: str) -> str | None:
    """The tree ProtectHome=yes hides that ``path`` lies in (``/home``, ``/root`` or
    ``/run/user``), judged from the text alone; None outside them."""
    for hidden in PROTECT_HOME_HIDES:
        if PurePosixPath(path).is_relative_to(hidden):
            return hidden
    return None
