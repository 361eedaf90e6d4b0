"""Escaping values for systemd unit files, by systemd's own rules.

References: systemd.unit(5) "Specifiers" and the file syntax section, systemd.service(5)
"Command lines", systemd.syntax(7) quoting, systemd.exec(5) ``Environment=``, systemd-escape(1).
Anything that cannot be represented safely is rejected with :class:`ValueError`; callers turn that
into a :class:`~cpsysd.errors.SpecError` naming the field.
"""

from __future__ import annotations

import re
from urllib.parse import quote

# Characters that need no quoting in a command-line word (systemd.service(5)).
_SAFE_WORD = re.compile(r"[A-Za-z0-9/_.:=+@,-]+")
_UNIT_NAME_STEM = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]*")
# systemd's UNIT_NAME_MAX is 255 including the suffix; leave room for "-cert-renew.service",
# "@65535.service" and similar names cpsysd derives from the stem.
UNIT_STEM_MAX = 200


def check_text(value: str) -> str:
    """Reject what would change a unit file's structure: control characters (newline, CR, tab,
    NUL, DEL...) and a trailing backslash, which systemd reads as a line continuation."""
    for ch in value:
        if ord(ch) < 0x20 or ord(ch) == 0x7F or ch in "\u2028\u2029\x85":
            raise ValueError(f"contains the control character {ch!r}")
        if 0xD800 <= ord(ch) <= 0xDFFF:  # a lone surrogate: undecodable bytes, no UTF-8 form
            raise ValueError(f"contains {ch!r}, which is not valid UTF-8 text")
    if value.endswith("\\"):
        raise ValueError("ends with a backslash (systemd would join it with the next line)")
    return value


def escape_specifiers(value: str) -> str:
    """Double every ``%`` so systemd does not expand it as a specifier (systemd.unit(5))."""
    return value.replace("%", "%%")


def file_url_path(path: str) -> str:
    """``path`` for a ``Documentation=file:PATH`` URL: systemd accepts only ASCII without
    whitespace there (documentation_url_is_valid()), so every other byte is percent-encoded
    (RFC 8089), and the encoding's ``%`` doubled so systemd does not read it as a specifier."""
    return escape_specifiers(quote(path, safe="/", errors="surrogateescape"))


def unit_value(value: str) -> str:
    """A free-text value for the right-hand side of ``Key=``: checked, specifiers escaped.

    systemd strips leading and trailing whitespace of values, so that is rejected too.
    """
    check_text(value)
    if value != value.strip():
        raise ValueError("has leading or trailing whitespace (systemd would drop it)")
    return escape_specifiers(value)


def quote_word(word: str) -> str:
    """One word of a command line (``ExecStart=``) that systemd splits back into exactly ``word``.

    Inside double quotes systemd unescapes C-style escapes; ``%`` is a specifier and ``$`` starts
    an environment variable reference everywhere, so they are doubled (systemd.service(5)).
    """
    check_text(word)
    escaped = escape_specifiers(word).replace("$", "$$")
    if word and _SAFE_WORD.fullmatch(word):
        return escaped
    escaped = escaped.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'


def command_line(argv: list[str]) -> str:
    """A whole command line for ``ExecStart=``; the first word must be an absolute path."""
    if not argv or not argv[0].startswith("/"):
        raise ValueError("the command must start with an absolute path")
    return " ".join(quote_word(word) for word in argv)


def quote_assignment(key: str, value: str) -> str:
    """``Environment="KEY=value"`` quoting: double quotes with C escapes (systemd.exec(5)).

    ``Environment=`` expands specifiers but not ``$VAR``, so only ``%`` is doubled.
    """
    check_text(value)
    body = escape_specifiers(f"{key}={value}").replace("\\", "\\\\").replace('"', '\\"')
    return f'"{body}"'


def check_unit_stem(name: str) -> str:
    """A unit-name stem (the part before ``.service``): systemd's allowed characters only, no
    ``@`` (cpsysd adds it for template units), at most :data:`UNIT_STEM_MAX` characters."""
    if not name:
        raise ValueError("is empty")
    if len(name) > UNIT_STEM_MAX:
        raise ValueError(f"is longer than {UNIT_STEM_MAX} characters")
    if not _UNIT_NAME_STEM.fullmatch(name):
        raise ValueError(
            "may only contain letters, digits and '-', '_', '.', ':' and must start with a "
            "letter or digit"
        )
    return name


def systemd_escape(text: str) -> str:
    """The escaping of ``systemd-escape TEXT`` (systemd-escape(1), unit_name_escape()):
    ``/`` becomes ``-``, a leading ``.`` and every byte outside ``[A-Za-z0-9:_.]`` become ``\\xNN``.
    """
    out: list[str] = []
    for index, byte in enumerate(text.encode()):
        ch = chr(byte)
        if ch == "/":
            out.append("-")
        elif (index == 0 and ch == ".") or not (ch.isascii() and (ch.isalnum() or ch in ":_.")):
            out.append(f"\\x{byte:02x}")
        else:
            out.append(ch)
    return "".join(out)
