"""The field table's other readers: the README's table of fields and the ``--help`` of the
``cpsysd init`` flags that set a field, both from :data:`~cpsysd.description.fields.FIELDS`.

``just fields`` (``scripts/readme_fields.py``) rewrites the README between :data:`BEGIN` and
:data:`END`; a test fails when the README drifts from the table."""

from __future__ import annotations

from cpsysd.description.fields import FIELDS, REQUIRED, Derived, Field, field
from cpsysd.description.toml import toml_value

BEGIN = "<!-- fields:begin (generated from cpsysd/description/fields.py: just fields) -->"
END = "<!-- fields:end -->"


def default_text(row: Field) -> str:
    """The default as the README says it (Markdown)."""
    if row.default is REQUIRED:
        return "required"
    if row.default is None:
        return "none"
    if isinstance(row.default, Derived):
        return row.default.doc
    return f"`{toml_value(row.default)}`"


def type_text(row: Field) -> str:
    """The TOML type, with the range or the choices."""
    if row.choices is not None:
        names = [f"`{member.value}`" for member in row.choices]
        return ", ".join(names[:-1]) + " or " + names[-1]
    if row.toml == "integer":
        return f"integer, {row.low} to {row.high}"
    if row.path:
        return "path" if row.base else "absolute path"
    return row.toml


def _row(key: str, row: Field) -> str:
    return f"| `{key}` | {type_text(row)} | {default_text(row)} | {row.help} |"


def readme_table() -> str:
    """The README's table of fields: every row of the table, sub-tables after their header."""
    lines = ["| key | type | default | meaning |", "|---|---|---|---|"]
    for row in FIELDS:
        lines.append(_row(f"[{row.key}]" if row.fields else row.key, row))
        lines += [_row(f"[{row.key}] {sub.key}", sub) for sub in row.fields]
    return "\n".join(lines)


def with_readme_table(readme: str) -> str:
    """``readme`` with the text between the markers replaced by :func:`readme_table`."""
    head, begin, rest = readme.partition(BEGIN)
    _, end, tail = rest.partition(END)
    if not begin or not end:
        raise ValueError(f"README has no {BEGIN} ... {END} markers")
    return f"{head}{BEGIN}\n{readme_table()}\n{END}{tail}"


def flag_help(dotted: str, lead: str = "") -> str:
    """The ``--help`` of a flag that sets the field ``dotted`` (``listen``, ``tls.cert``)."""
    row = field(dotted)
    meaning = row.help.replace("`", "")
    if not lead and not row.help.startswith("`"):  # `module:Object` stays as it is written
        meaning = meaning[:1].upper() + meaning[1:]
    text = f"{lead}{meaning}."
    if row.default is REQUIRED or row.default is None:
        return text
    return f"{text} Default: {default_text(row).replace('`', '')}."
