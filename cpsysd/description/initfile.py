"""The text ``cpsysd init`` writes: every field of :data:`~cpsysd.description.fields.FIELDS`,
with its comment and default, unused ones commented out. Pure; :mod:`cpsysd.host.initfile`
validates and writes it."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from cpsysd.description.fields import FIELDS, REQUIRED, Derived, Field
from cpsysd.description.toml import toml_value

HEADER = (
    "# cpsysd app description. Check it: cpsysd verify -c THIS_FILE",
    "# Try it under a real systemd: cpsysd try -c THIS_FILE",
    "# Install it: cpsysd install NAME -c THIS_FILE",
)


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

    def given(self) -> dict[str, Any]:
        """The fields the request sets, by dotted key (``tls.cert``)."""
        values: dict[str, Any] = {
            "name": self.name,
            "entry": self.entry,
            "listen": list(self.listen) or None,
            "network": self.network,
            "config": self.config,
            "python": self.python,
            "working_directory": self.working_directory,
        }
        if self.tls_cert or self.tls_key:
            values |= {"tls": True, "tls.cert": self.tls_cert or "", "tls.key": self.tls_key or ""}
        return {key: value for key, value in values.items() if value is not None}


def default_note(field: Field, shown: object) -> str:
    """`` (default: X)`` where the line does not show the default itself."""
    if field.default is REQUIRED or field.default is None:
        return ""
    if isinstance(field.default, Derived):
        return f" (default: {field.default.doc.replace('`', '')})"
    if shown == field.default:
        return ""
    return f" (default: {toml_value(field.default)})"


def _line(text: str, comment: str, enabled: bool) -> str:
    return f"{'' if enabled else '# '}{text:<40} # {comment}"


def _key(key: str) -> str:
    return key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else toml_value(key)


def _field_line(field: Field, given: dict[str, Any], dotted: str, on: bool, name: str) -> str:
    if dotted in given:
        value, enabled = given[dotted], True
    elif field.example is not None:
        value, enabled = field.example, field.enabled
    elif isinstance(field.default, Derived):
        value, enabled = field.default.make({"name": name}, "."), field.enabled
    else:
        value, enabled = field.default, field.enabled
    text = f"{field.key} = {toml_value(value)}"
    return _line(text, field.comment + default_note(field, value), enabled and on)


def _table_lines(field: Field, given: dict[str, Any], name: str) -> list[str]:
    """A sub-table: its own fields, or (environment, vhosts) example entries."""
    on = field.key in given or not field.fields
    lines = ["", _line(f"[{field.key}]", field.comment + default_note(field, {}), on)]
    if not field.fields:
        shown = field.example if field.example is not None else field.default
        for key, value in shown.items():
            lines.append(f"{'' if field.enabled else '# '}{_key(key)} = {toml_value(value)}")
        return lines
    for sub in field.fields:
        lines.append(_field_line(sub, given, f"{field.key}.{sub.key}", on, name))
    return lines


def render_init(request: InitRequest) -> str:
    """The description text: every field present, unused ones commented out, each with its
    default where the line does not show it."""
    given = request.given()
    lines = list(HEADER)
    for field in FIELDS:
        if field.toml != "table":
            lines.append(_field_line(field, given, field.key, True, request.name))
    for field in FIELDS:
        if field.toml == "table":
            lines += _table_lines(field, given, request.name)
    return "\n".join(lines) + "\n"
