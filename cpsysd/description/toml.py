"""Write an :class:`~cpsysd.description.load.AppSpec` back as TOML: the resolved copy that ``cpsysd
install``
places in ``/etc/cpsysd/NAME.toml`` (absolute paths, every default spelled out), which the
service's ``cpsysd serve -c`` reads. ``load_spec(dump) == spec`` holds (tested)."""

from __future__ import annotations

import json
from typing import Any

from cpsysd.description.load import AppSpec, Listener

HEADER = "# Written by cpsysd install from {source}; edit that file and run install again.\n"


def _string(text: str) -> str:
    # JSON string syntax is TOML basic-string syntax, except that TOML forbids a raw DEL.
    return json.dumps(text, ensure_ascii=False).replace("\x7f", "\\u007f")


def toml_value(value: Any) -> str:
    """One TOML value (string, integer, boolean, array or inline table)."""
    return _value(value)


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return _string(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_value(item) for item in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{_string(k)} = {_value(v)}" for k, v in value.items()) + " }"
    raise TypeError(f"cannot write {type(value).__name__} as TOML")


def _listener(listener: Listener) -> dict[str, Any]:
    return {"address": listener.address, "name": listener.name, "tls": listener.tls}


def spec_to_table(spec: AppSpec) -> dict[str, Any]:
    """Every field of ``spec`` as plain TOML-able values, None-valued optionals left out."""
    table: dict[str, Any] = {
        "name": spec.name,
        "entry": spec.entry,
        "kind": spec.kind.value,
        "python": spec.python,
        "working_directory": spec.working_directory,
        "description": spec.description,
        "user": f"{spec.user}:{spec.group}" if spec.group else (spec.user or ""),
        "network": spec.network,
        "outbound": list(spec.outbound),
        "watchdog_sec": spec.watchdog_sec,
        "idle_stop_sec": spec.idle_stop_sec,
        "timeout_stop_sec": spec.timeout_stop_sec,
        "restart": spec.restart.value,
        "hardening": spec.hardening.value,
        "state_directory": spec.state_directory,
        "workers": spec.workers,
        "worker_mode": spec.worker_mode.value,
        "listen": [_listener(listener) for listener in spec.listeners],
        "environment": dict(spec.environment),
        "vhosts": dict(spec.vhosts),
    }
    if spec.config:
        table["config"] = spec.config
    if spec.environment_file:
        table["environment_file"] = spec.environment_file
    if spec.tls:
        tls = spec.tls
        table["tls"] = {
            "cert": tls.cert,
            "key": tls.key,
            "renew_days": tls.renew_days,
            "hosts": list(tls.hosts),
        }
        if tls.chain:
            table["tls"]["chain"] = tls.chain
        if tls.passphrase_file:
            table["tls"]["passphrase_file"] = tls.passphrase_file
        if tls.ca_dir:
            table["tls"]["ca_dir"] = tls.ca_dir
        if tls.ca_passphrase_file:
            table["tls"]["ca_passphrase_file"] = tls.ca_passphrase_file
    if spec.nginx:
        ng = spec.nginx
        table["nginx"] = {
            "server_name": list(ng.server_names),
            "listen": ng.listen,
            "static": dict(ng.static),
            "upstream": list(ng.upstream),
            "client_max_body_size": ng.client_max_body_size,
        }
        if ng.tls_cert and ng.tls_key:
            table["nginx"]["tls_cert"] = ng.tls_cert
            table["nginx"]["tls_key"] = ng.tls_key
    return table


def spec_to_toml(spec: AppSpec) -> str:
    """The resolved description as a TOML document (inline tables, so key order is stable)."""
    lines = [HEADER.format(source=_string(spec.source or "a description"))]
    for key, value in spec_to_table(spec).items():
        if key == "listen":
            lines.append("listen = [\n" + "".join(f"  {_value(item)},\n" for item in value) + "]")
        else:
            lines.append(f"{key} = {_value(value)}")
    return "\n".join(lines) + "\n"
