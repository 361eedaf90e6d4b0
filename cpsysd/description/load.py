"""The app description (``cpsysd.toml`` or ``[tool.cpsysd]`` in a pyproject.toml).

Parsed once, at the boundary, into frozen dataclasses; every field is validated here and every
error names its field (checkers in :mod:`cpsysd.description.checks`, the dataclasses in
:mod:`cpsysd.description.model`, re-exported here). Nothing touches the file system except
:func:`load_spec`, which reads
the one file it is given. Each field is a row of :data:`cpsysd.description.fields.FIELDS`; the
rules between fields are here.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from cpsysd.description.acme import check_acme_rules
from cpsysd.description.bounds import read_description
from cpsysd.description.checks import (
    SUN_PATH_MAX,
    UNIT_NAME_MAX,
    _no_unknown,
    _typed,
    check_file_path,
    check_path,
    parse_listener,
)
from cpsysd.description.fields import FIELDS, REQUIRED, Derived, Field
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
from cpsysd.description.resources import check_memory_order
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

KNOWN_KEYS = {field.key for field in FIELDS}


def _parse_fields(
    section: str, fields: Sequence[Field], table: Mapping[str, Any], base_dir: str, workdir: str
) -> dict[str, Any]:
    """The model attributes of one (sub-)table, each field checked and defaulted by its row."""
    _no_unknown(section, table, {field.key for field in fields})
    prefix = f"{section}." if section else ""
    for field in fields:
        if field.default is REQUIRED and field.key not in table:
            raise SpecError(f"{prefix}{field.key}", "is missing", field.missing)
    values: dict[str, Any] = {}
    for field in fields:
        fieldname = f"{prefix}{field.key}"
        if field.key in table:
            raw = table[field.key]
        elif field.default is None:
            values[field.name] = None
            continue
        elif isinstance(field.default, Derived):
            raw = field.default.make(values, base_dir)
        else:
            raw = field.default
        # Relative paths point into the working directory, parsed above them (table order).
        where = values.get("working_directory", workdir)
        if field.record is not None:
            sub = _typed(fieldname, raw, dict, "a table")
            values[field.name] = field.record(
                **_parse_fields(fieldname, field.fields, sub, base_dir, where)
            )
            continue
        base = {"workdir": where, "description": base_dir}.get(field.base)
        values[field.name] = field.parse(fieldname, raw, base)
    return values


def parse_spec(table: Mapping[str, Any], base_dir: str, source: str | None = None) -> AppSpec:
    """Validate a description table; ``base_dir`` is the directory of the file it came from."""
    values = _parse_fields("", FIELDS, table, base_dir, base_dir)
    values["user"], values["group"] = values["user"]
    spec = AppSpec(**values, source=source)
    _check_listeners(spec)
    _check_workers(spec)
    if spec.outbound and not spec.network:
        raise SpecError("outbound", "needs network = true", "drop outbound, or set network = true")
    if spec.state_directory and ":" in spec.name:
        raise SpecError(
            "state_directory",
            f"needs a name without ':' (StateDirectory={spec.name} would mean SOURCE:SYMLINK)",
            "rename the app, or set state_directory = false",
        )
    _check_idle_stop(spec)
    check_memory_order(spec.memory_high, spec.memory_max)
    _check_sections(spec)
    check_acme_rules(spec)
    return spec


# systemd refuses a unit's 6th start within 10 s (DefaultStartLimitBurst=5,
# DefaultStartLimitIntervalSec=10s, systemd-system.conf(5)), socket-triggered starts included, and
# then leaves the socket failed: a start every idle period plus a cold start must stay above 2 s.
IDLE_STOP_MIN = 2


def _check_idle_stop(spec: AppSpec) -> None:
    if not spec.idle_stop_sec:
        return
    if spec.idle_stop_sec < IDLE_STOP_MIN:
        raise SpecError(
            "idle_stop_sec",
            f"{spec.idle_stop_sec} s would let a steady trickle of clients start the app more "
            "than 5 times in 10 s, which systemd refuses (StartLimitBurst=)",
            f"use 0 (off) or at least {IDLE_STOP_MIN}",
        )
    if spec.restart in (Restart.ALWAYS, Restart.ON_SUCCESS):
        # The idle exit is a clean exit 0: systemd would start the app again at once, for ever.
        raise SpecError(
            "idle_stop_sec",
            f"cannot stop an app that restart = {spec.restart.value!r} starts again on a clean "
            "exit",
            'use restart = "on-failure", or idle_stop_sec = 0',
        )


def _check_listeners(spec: AppSpec) -> None:
    listeners = spec.listeners
    for i, listener in enumerate(listeners):
        # The longest unit named after a socket: a worker instance's NAME-FDNAME@PORT.socket.
        unit = f"{spec.name}-{listener.name}@65535.socket"
        if listener.name != listeners[0].name and len(unit) > UNIT_NAME_MAX:
            raise SpecError(
                f"listen[{i}]",
                f"socket name {listener.name!r} makes unit names longer than {UNIT_NAME_MAX}",
                "use a shorter socket name or app name",
            )
    if any(listener.tls for listener in listeners) and spec.tls is None:
        raise SpecError(
            "tls",
            "a TLS listener needs certificate files",
            "add [tls] cert and key, or pass cpsysd init --tls-cert FILE --tls-key FILE; "
            "cpsysd cert selfsigned makes them",
        )


def _check_workers(spec: AppSpec) -> None:
    if spec.workers > 1 and spec.worker_mode is WorkerMode.PORTS:
        for listener in spec.listeners:
            if listener.is_unix or (listener.port or 0) + spec.workers - 1 > 65535:
                raise SpecError(
                    "worker_mode",
                    f"'ports' needs TCP listeners with {spec.workers} ports from "
                    f"{listener.address}",
                )


def _check_sections(spec: AppSpec) -> None:
    """The rules between fields of [tls] and of [nginx]."""
    if spec.tls and spec.tls.ca_passphrase_file and not spec.tls.ca_dir:
        raise SpecError(
            "tls.ca_passphrase_file",
            "unlocks the key of a local CA, but there is no ca_dir",
            'add ca_dir = "/etc/cpsysd/ca" (the CA whose key it unlocks), or remove it',
        )
    if spec.nginx and (spec.nginx.tls_cert is None) != (spec.nginx.tls_key is None):
        given = "tls_cert" if spec.nginx.tls_cert else "tls_key"
        raise SpecError(f"nginx.{given}", "needs both tls_cert and tls_key")


def load_spec(path: str | Path) -> AppSpec:
    """Read and validate a ``cpsysd.toml``, or the ``[tool.cpsysd]`` table of a pyproject.toml."""
    file = Path(path)
    try:
        data = tomllib.loads(read_description(file))
    except FileNotFoundError:
        raise SpecError(
            str(file),
            "no such file",
            "create one with: cpsysd init --name NAME --entry MODULE:OBJECT",
        ) from None
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
