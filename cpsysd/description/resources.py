"""Checks for the resource bounds and the ``credentials`` table of a description.

Memory sizes follow systemd.resource-control(5) ``MemoryMax=``: bytes with an optional base-1024
suffix ``K``, ``M``, ``G`` or ``T``, or ``infinity``. Percentages are left out on purpose: a
``%`` in a unit file is a specifier and would need its own escaping rules.

Credential names end up as ``LoadCredential=NAME:FILE`` and as a file name in
``$CREDENTIALS_DIRECTORY`` (systemd.exec(5), "Credentials"): no ``:`` (it separates the file),
no ``/``, no leading dot, and not ``tls-...``, which cpsysd's own TLS credentials use.
"""

from __future__ import annotations

import re

from cpsysd.description.checks import _typed, check_file_path
from cpsysd.errors import SpecError

_SIZE = re.compile(r"([1-9][0-9]{0,18})([KMGT]?)")
_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
# Below this a Python interpreter with CherryPy loaded (about 25 MiB RSS) is killed at start.
MEMORY_MIN = 32 << 20
_CREDENTIAL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
RESERVED_PREFIX = "tls-"  # cpsysd.credentials.CREDENTIAL_*: the TLS files


def memory_bytes(size: str) -> int | None:
    """The bytes of a checked size, None for ``infinity``."""
    found = _SIZE.fullmatch(size)
    return None if found is None else int(found[1]) * _UNITS[found[2]]


def memory_size(fieldname: str, value: object, _base: str = "") -> str:
    """A ``MemoryMax=``-style size: ``512M``, ``2G``, ``1073741824`` or ``infinity``."""
    text: str = _typed(fieldname, value, str, 'a size like "512M" or "infinity"')
    if text == "infinity":
        return text
    size = memory_bytes(text)
    if size is None or size >= 1 << 62:
        raise SpecError(
            fieldname,
            f"{text!r} is not a size systemd understands",
            'use a number with an optional K, M, G or T suffix, like "512M", or "infinity"',
        )
    if size < MEMORY_MIN:
        raise SpecError(
            fieldname,
            f"{text} is too little for a Python app to start",
            f'use at least "{MEMORY_MIN >> 20}M"',
        )
    return text


def check_memory_order(high: str, maximum: str) -> None:
    """``MemoryHigh=`` throttles and reclaims below ``MemoryMax=``, which kills: one above the
    other would never throttle (systemd.resource-control(5))."""
    high_bytes, max_bytes = memory_bytes(high), memory_bytes(maximum)
    if max_bytes is not None and (high_bytes is None or high_bytes > max_bytes):
        raise SpecError(
            "memory_high",
            f"{high} is above memory_max = {maximum}, so the app would be killed before it "
            "is ever throttled",
            "make memory_high at most memory_max",
        )


def credentials_table(fieldname: str, value: object, base: str) -> tuple[tuple[str, str], ...]:
    """``NAME = "FILE"`` pairs; a relative FILE is taken relative to the working directory."""
    table = _typed(fieldname, value, dict, 'a table of NAME = "/path/of/the/file"')
    pairs = []
    for name, path in table.items():
        if not _CREDENTIAL_NAME.fullmatch(name) or name.startswith(RESERVED_PREFIX):
            raise SpecError(
                f"{fieldname}.{name}",
                "is not a credential name cpsysd can pass",
                "use up to 64 letters, digits, '_', '.', '-', not starting with "
                f"'{RESERVED_PREFIX}' (cpsysd's TLS files) or a dot",
            )
        pairs.append((name, check_file_path(f"{fieldname}.{name}", path, base)))
    return tuple(pairs)
