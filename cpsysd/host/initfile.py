"""``cpsysd init``: a commented cpsysd.toml for an entry point, validated before it is written."""

from __future__ import annotations

import importlib.machinery
import tomllib
from dataclasses import dataclass
from pathlib import Path

from cpsysd.description.load import parse_spec
from cpsysd.description.toml import toml_value
from cpsysd.errors import CpsysdError, SpecError
from cpsysd.host import fsutil


@dataclass(frozen=True)
class InitRequest:
    """What ``cpsysd init`` was asked for; None means "leave the default"."""

    name: str
    entry: str
    listen: tuple[str, ...] = ()
    network: bool = True
    config: str | None = None
    python: str | None = None
    working_directory: str | None = None
    tls_cert: str | None = None
    tls_key: str | None = None


def _line(key: str, value: object, comment: str, enabled: bool = True) -> str:
    text = f"{key} = {toml_value(value)}"
    return f"{'' if enabled else '# '}{text:<40} # {comment}"


def render_init(request: InitRequest) -> str:
    """The description text: every option present, unused ones commented out with their default."""
    listen = list(request.listen) or ["8080"]
    lines = [
        "# cpsysd app description. Check it: cpsysd verify -c THIS_FILE",
        "# Try it under a real systemd: cpsysd try -c THIS_FILE",
        "# Install it: cpsysd install NAME -c THIS_FILE",
        _line("name", request.name, "unit name stem: NAME.service, NAME.socket"),
        _line("entry", request.entry, "MODULE:OBJECT, a CherryPy root or a WSGI callable"),
        _line("kind", "auto", "auto, cherrypy or wsgi"),
        _line("description", f"{request.name} (served by cpsysd)", "Description= of the units"),
        _line(
            "config",
            request.config or "app.conf",
            "CherryPy config, relative to working_directory",
            request.config is not None,
        ),
        _line(
            "python",
            request.python or "/opt/APP/venv/bin/python",
            "interpreter with the app and cpsysd (default: the one running cpsysd)",
            request.python is not None,
        ),
        _line(
            "working_directory",
            request.working_directory or "/srv/APP",
            "the app is imported from here (default: this file's directory)",
            request.working_directory is not None,
        ),
        _line(
            "listen",
            listen,
            "PORT, HOST:PORT, [V6]:PORT, /unix/path; =NAME names the socket ('https' = TLS)",
        ),
        _line("network", request.network, "false: no outbound connections (PrivateNetwork=yes)"),
        _line("outbound", ["10.0.0.0/8"], "with network: destinations beyond localhost", False),
        _line("user", "", '"" = DynamicUser=yes; or "user" / "user:group"'),
        _line(
            "watchdog_sec", 30, "restart the app when it stops answering for this long (0 = off)"
        ),
        _line(
            "idle_stop_sec",
            300,
            "exit after this long with no connection, the next starts it; only under systemd",
            False,
        ),
        _line("timeout_stop_sec", 30, "how long in-flight requests may finish on stop"),
        _line("restart", "on-failure", "systemd Restart="),
        _line("hardening", "strict", "strict, or relaxed (for JITs and cffi callbacks)"),
        _line("workers", 1, "N processes (template units NAME@.service)"),
        _line("environment_file", "/etc/default/APP", "EnvironmentFile=", False),
        "",
        "[environment]                            # Environment= for the app",
        '# DATABASE_URL = "postgresql:///app"',
    ]
    if request.tls_cert or request.tls_key:
        lines += [
            "",
            "[tls]                                    # passed to the service with LoadCredential=",
            _line("cert", request.tls_cert or "", "certificate (chain) PEM"),
            _line("key", request.tls_key or "", "private key PEM (0600)"),
            _line("chain", "/etc/cpsysd/tls/chain.pem", "intermediate certificates", False),
            _line("passphrase_file", "/root/tls.pass", "for an encrypted key", False),
            _line("renew_days", 30, "re-issue this many days before expiry (a timer)", False),
            _line("hosts", ["localhost"], "names to renew for (default: the certificate's)", False),
            _line("ca_dir", "/etc/cpsysd/ca", "renew from this CA (default: self-signed)", False),
            _line("ca_passphrase_file", "/root/ca.pass", "for an encrypted CA key", False),
        ]
    return "\n".join(lines) + "\n"


def _check_module(entry: str, workdir: Path) -> None:
    """The entry's top-level module must be importable from the working directory (or be
    installed for this interpreter): a typo found now, not at the first request."""
    top = entry.split(":", 1)[0].split(".", 1)[0]
    if importlib.machinery.PathFinder.find_spec(top, [str(workdir)]) is not None:
        return
    if importlib.machinery.PathFinder.find_spec(top) is not None:
        return
    raise SpecError(
        "entry",
        f"module {top!r} not found in {workdir}",
        "write the description next to the app, or pass --working-directory",
    )


def write_init(request: InitRequest, output: Path | None, *, force: bool = False) -> str:
    """Validate, then write the description to ``output`` (None: only return the text)."""
    text = render_init(request)
    base = output.resolve().parent if output else Path.cwd()
    spec = parse_spec(tomllib.loads(text), str(base))
    _check_module(spec.entry, Path(spec.working_directory))
    if output is not None:
        if output.exists() and not force:
            raise CpsysdError(
                f"{output} exists", "pass --force to overwrite it, or -o another file"
            )
        fsutil.atomic_write(output, text.encode(), 0o644)
    return text
