"""Write an :class:`~cpsysd.description.model.AppSpec` back as TOML, field by field of
:data:`~cpsysd.description.fields.FIELDS`: the resolved copy that ``cpsysd install`` places in
``/etc/cpsysd/NAME.toml`` (absolute paths, every default spelled out), which the service's
``cpsysd serve -c`` reads. ``load_spec(dump) == spec`` holds (tested)."""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from cpsysd.description.fields import FIELDS, Field
from cpsysd.description.model import AppSpec

HEADER = "# Written by cpsysd install from {source}; edit that file and run install again.\n"


def _string(text: str) -> str:
    # Imported here: `cpsysd --help` formats the init flags' defaults with this module, and
    # json would be its only reason to load the decoder and encoder (about 2 ms).
    import json

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
    if isinstance(value, dict) and not value:
        return "{}"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{_string(k)} = {_value(v)}" for k, v in value.items()) + " }"
    raise TypeError(f"cannot write {type(value).__name__} as TOML")


def _written(field: Field, owner: Any) -> Any:
    """``field`` of the parsed record ``owner`` as a TOML value; None: leave it out."""
    if field.write is not None:
        return field.write(owner)
    value = getattr(owner, field.name)
    if value is None:
        return None
    if field.fields:
        return _section(field.fields, value)
    if isinstance(value, StrEnum):
        return value.value
    if field.toml == "table":
        return dict(value)
    if field.toml == "array":
        return list(value)
    return value


def _section(fields: tuple[Field, ...], owner: Any) -> dict[str, Any]:
    table = {field.key: _written(field, owner) for field in fields}
    return {key: value for key, value in table.items() if value is not None}


def spec_to_table(spec: AppSpec) -> dict[str, Any]:
    """Every field of ``spec`` as plain TOML-able values, None-valued optionals left out."""
    return _section(FIELDS, spec)


def spec_to_toml(spec: AppSpec) -> str:
    """The resolved description as a TOML document (inline tables, so key order is stable)."""
    lines = [HEADER.format(source=_string(spec.source or "a description"))]
    for key, value in spec_to_table(spec).items():
        if key == "listen":
            lines.append("listen = [\n" + "".join(f"  {_value(item)},\n" for item in value) + "]")
        else:
            lines.append(f"{key} = {_value(value)}")
    return "\n".join(lines) + "\n"
