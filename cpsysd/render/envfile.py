"""The app's ``environment`` as the text of an ``EnvironmentFile=`` (systemd.exec(5)).

``cpsysd install`` writes it root-only (0600) instead of putting ``Environment=`` lines in the
unit: systemd reads it as root before it drops privileges, and unlike ``Environment=`` its
values are not shown by ``systemctl show`` to every user over D-Bus, nor in a 0644 unit file.

Each value is double-quoted. systemd 252's parser (``parse_env_file_internal`` in
src/basic/env-file.c) takes a double-quoted value literally, newlines included, except that a
backslash before one of ``"``, ``\\``, `````` ` `````` or ``$`` stands for that character; so
exactly those four are escaped. It expands no ``$VAR`` and no ``%`` specifier in these files.
Values never hold control characters (the description's checks refuse them). Pure: text only.
"""

from __future__ import annotations

from cpsysd.description.model import AppSpec

HEADER = "# Written by cpsysd install from {source}: the app's environment, for root only.\n"
_ESCAPED = '"\\`$'


def quote_env_value(value: str) -> str:
    """``value`` as a double-quoted ``EnvironmentFile=`` value."""
    return '"' + "".join("\\" + ch if ch in _ESCAPED else ch for ch in value) + '"'


def environment_file_text(spec: AppSpec) -> str:
    """``KEY="value"`` lines for every variable of ``spec.environment``."""
    source = "".join(ch if ch.isprintable() else "?" for ch in spec.source or "a description")
    lines = [f"{key}={quote_env_value(value)}\n" for key, value in spec.environment]
    return HEADER.format(source=source) + "".join(lines)
