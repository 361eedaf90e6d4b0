"""The app description (``cpsysd.toml`` or ``[tool.cpsysd]`` in a pyproject.toml).

Parsed once, at the boundary, into frozen dataclasses; every field is validated here and every
error names its field (checkers in :mod:`cpsysd.description.checks`, the dataclasses in
:mod:`cpsysd.description.model`, re-exported here). Nothing touches the file system except
:func:`load_spec`, which reads
the one file it is given. The field table is documented in ``docs``/README and by ``cpsysd init``.
"""

from __future__ import annotations

import sys
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from cpsysd import escape
from cpsysd.description.checks import (
    SUN_PATH_MAX,
    UNIT_NAME_MAX,
    _bool,
    _choice,
    _environment,
    _int,
    _listeners,
    _nginx,
    _no_unknown,
    _outbound,
    _text,
    _tls,
    _typed,
    _user,
    _vhosts,
    check_file_path,
    check_path,
    is_entry,
    parse_listener,
)
from cpsysd.description.model import (
    AppSpec,
    Hardening,
    Kind,
    Listener,
    NginxConfig,
    Restart,
    TLSConfig,
    WorkerMode,
)
from cpsysd.errors import SpecError

__all__ = [
    "KNOWN_KEYS",
    "SUN_PATH_MAX",
    "AppSpec",
    "Hardening",
    "Kind",
    "Listener",
    "NginxConfig",
    "Restart",
    "TLSConfig",
    "WorkerMode",
    "check_file_path",
    "check_path",
    "load_spec",
    "parse_listener",
    "parse_spec",
]

KNOWN_KEYS = {
    "outbound",
    "name",
    "entry",
    "kind",
    "config",
    "python",
    "working_directory",
    "description",
    "user",
    "environment",
    "environment_file",
    "listen",
    "network",
    "watchdog_sec",
    "idle_stop_sec",
    "timeout_stop_sec",
    "restart",
    "hardening",
    "state_directory",
    "workers",
    "worker_mode",
    "tls",
    "nginx",
    "vhosts",
}


def parse_spec(table: Mapping[str, Any], base_dir: str, source: str | None = None) -> AppSpec:
    """Validate a description table; ``base_dir`` is the directory of the file it came from."""
    _no_unknown("", table, KNOWN_KEYS)
    for required, example in (("name", '"hello"'), ("entry", '"hello:Root"')):
        if required not in table:
            raise SpecError(required, "is missing", f"add {required} = {example}")
    name = _typed("name", table["name"], str, "a unit name")
    try:
        escape.check_unit_stem(name)
    except ValueError as err:
        raise SpecError("name", f"{name!r} {err}", 'e.g. name = "my-app"') from None
    entry = _typed("entry", table["entry"], str, "MODULE:OBJECT")
    if not is_entry(entry):
        raise SpecError(
            "entry",
            f"{entry!r} is not MODULE:OBJECT",
            'e.g. entry = "hello:Root" or "myapp.wsgi:application"',
        )
    workdir = check_path("working_directory", table.get("working_directory", base_dir), base_dir)
    get = table.get
    user, group = _user("user", get("user", ""))
    tls = _tls("tls", table["tls"], workdir) if "tls" in table else None
    listeners = _listeners("listen", get("listen", ["8080"]))
    for i, listener in enumerate(listeners):
        # The longest unit named after a socket: a worker instance's NAME-FDNAME@PORT.socket.
        unit = f"{name}-{listener.name}@65535.socket"
        if listener.name != listeners[0].name and len(unit) > UNIT_NAME_MAX:
            raise SpecError(
                f"listen[{i}]",
                f"socket name {listener.name!r} makes unit names longer than {UNIT_NAME_MAX}",
                "use a shorter socket name or app name",
            )
    if any(listener.tls for listener in listeners) and tls is None:
        raise SpecError(
            "tls",
            "a TLS listener needs certificate files",
            "add [tls] cert and key, or pass cpsysd init --tls-cert FILE --tls-key FILE; "
            "cpsysd cert selfsigned makes them",
        )
    workers = _int("workers", get("workers", 1), 1, 256)
    worker_mode = _choice("worker_mode", get("worker_mode", "reuseport"), WorkerMode)
    if workers > 1 and worker_mode is WorkerMode.PORTS:
        for listener in listeners:
            if listener.is_unix or (listener.port or 0) + workers - 1 > 65535:
                raise SpecError(
                    "worker_mode",
                    f"'ports' needs TCP listeners with {workers} ports from {listener.address}",
                )
    network = _bool("network", get("network", True))
    idle_stop_sec = _int("idle_stop_sec", get("idle_stop_sec", 0), 0, 86400)
    restart = _choice("restart", get("restart", "on-failure"), Restart)
    if idle_stop_sec and restart in (Restart.ALWAYS, Restart.ON_SUCCESS):
        # The idle exit is a clean exit 0: systemd would start the app again at once, for ever.
        raise SpecError(
            "idle_stop_sec",
            f"cannot stop an app that restart = {restart.value!r} starts again on a clean exit",
            'use restart = "on-failure", or idle_stop_sec = 0',
        )
    python = check_file_path("python", get("python", sys.executable))  # ExecStart=/ is refused
    state_directory = _bool("state_directory", get("state_directory", False))
    if state_directory and ":" in name:
        raise SpecError(
            "state_directory",
            f"needs a name without ':' (StateDirectory={name} would mean SOURCE:SYMLINK)",
            "rename the app, or set state_directory = false",
        )
    return AppSpec(
        name=name,
        entry=entry,
        kind=_choice("kind", get("kind", "auto"), Kind),
        config=check_file_path("config", table["config"], workdir) if "config" in table else None,
        python=python,
        working_directory=workdir,
        description=_text("description", get("description", f"{name} (served by cpsysd)")),
        user=user,
        group=group,
        environment=_environment("environment", get("environment", {})),
        environment_file=check_file_path("environment_file", table["environment_file"])
        if "environment_file" in table
        else None,
        listeners=listeners,
        network=network,
        outbound=_outbound("outbound", get("outbound", []), network),
        watchdog_sec=_int("watchdog_sec", get("watchdog_sec", 30), 0, 3600),
        idle_stop_sec=idle_stop_sec,
        timeout_stop_sec=_int("timeout_stop_sec", get("timeout_stop_sec", 30), 1, 3600),
        restart=restart,
        hardening=_choice("hardening", get("hardening", "strict"), Hardening),
        state_directory=state_directory,
        workers=workers,
        worker_mode=worker_mode,
        tls=tls,
        nginx=_nginx("nginx", table["nginx"], workdir) if "nginx" in table else None,
        vhosts=_vhosts("vhosts", get("vhosts", {})),
        source=source,
    )


def load_spec(path: str | Path) -> AppSpec:
    """Read and validate a ``cpsysd.toml``, or the ``[tool.cpsysd]`` table of a pyproject.toml."""
    file = Path(path)
    try:
        data = tomllib.loads(file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SpecError(
            str(file),
            "no such file",
            "create one with: cpsysd init --name NAME --entry MODULE:OBJECT",
        ) from None
    except (OSError, UnicodeDecodeError) as err:
        raise SpecError(str(file), f"cannot read: {err}") from None
    except tomllib.TOMLDecodeError as err:
        raise SpecError(str(file), f"invalid TOML: {err}") from None
    if file.name == "pyproject.toml":
        data = data.get("tool", {}).get("cpsysd")
        if not isinstance(data, dict):
            raise SpecError(
                str(file), "has no [tool.cpsysd] table", "add one, or use a cpsysd.toml"
            )
    absolute = file.resolve()
    return parse_spec(data, str(absolute.parent), source=str(absolute))
