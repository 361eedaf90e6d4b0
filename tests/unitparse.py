"""Read unit files the way systemd 252 reads them: for tests that must not trust cpsysd.escape.

A port of the parts of systemd that turn unit-file bytes into settings, written from the C
sources (not from cpsysd.escape, which it checks):

- ``read_line()`` (src/basic/fileio.c): a line ends at ``\\n``, ``\\r``, ``\\r\\n``,
  ``\\n\\r`` or NUL; a line of ``LONG_LINE_MAX`` (1 MiB) bytes or more fails the whole file.
- ``config_parse()`` / ``parse_line()`` (src/shared/conf-parser.c, systemd.syntax(7)): comment
  lines (``#``, ``;`` after leading whitespace) are dropped even inside a continuation; a line
  ending in an unescaped backslash is joined with the next, the backslash becoming a space;
  ``[Section]`` headers; ``Key=value`` with whitespace (`` \\t\\n\\r``) stripped around both;
  invalid UTF-8, a missing ``=``, unknown sections and assignments outside a section are
  warnings, a bad section header is fatal.
- ``extract_first_word()`` (src/basic/extract-word.c) with ``cunescape_one()``
  (src/basic/escape.c): quotes anywhere in a word, C escapes inside and outside quotes.
- ``config_parse_exec()`` (src/core/load-fragment.c): command prefixes ``-@:+!``, a lone ``;``
  separates commands, ``\\;`` is a literal ``;``, specifiers expanded per word after unquoting;
  at exec time ``replace_env_argv()`` (src/basic/env-util.c) expands ``$VAR`` words, ``${VAR}``
  and turns ``$$`` into ``$``.
- ``config_parse_environ()``: quoted ``KEY=value`` words, C-unescaped, specifiers expanded,
  ``env_assignment_is_valid()``.
- ``specifier_printf()`` (src/shared/specifier.c): ``%%`` is ``%``; any other ``%x`` is a
  specifier, which :func:`resolve_specifiers` refuses unless given a value for it.

Nothing here imports cpsysd.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from enum import Flag, auto

LONG_LINE_MAX = 1024 * 1024  # src/basic/def.h
WHITESPACE = b" \t\n\r"
COMMENTS = b"#;"
BOM = "\ufeff".encode()
UNIT_NAME_MAX = 256  # includes the NUL: names are at most 255 bytes
PATH_MAX = 4096
NAME_MAX = 255
_UNIT_CHARS = set(b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ:-_.\\")
UNIT_TYPES = {
    "service",
    "socket",
    "target",
    "device",
    "mount",
    "automount",
    "swap",
    "timer",
    "path",
    "slice",
    "scope",
}
SECTIONS = {
    "service": ("Unit", "Service", "Install"),
    "socket": ("Unit", "Socket", "Install"),
    "timer": ("Unit", "Timer", "Install"),
    "target": ("Unit", "Install"),
    "path": ("Unit", "Path", "Install"),
}


class UnitLoadError(Exception):
    """systemd would refuse the whole file: ``kind`` is ``"error"`` (the file is unreadable:
    "failed to load properly") or ``"bad-setting"`` (a fatal setting stopped the parse)."""

    def __init__(self, message: str, kind: str = "error") -> None:
        super().__init__(message)
        self.kind = kind


class WordError(ValueError):
    """A value systemd cannot split into words (unbalanced quotes): the setting is ignored."""


class SpecifierError(ValueError):
    """A ``%x`` specifier would be expanded (or refused) by systemd."""


@dataclass(frozen=True)
class Assignment:
    section: str
    key: str
    value: str
    line: int


@dataclass
class UnitFile:
    """The assignments of one file in order, and what systemd would have warned about."""

    assignments: list[Assignment] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def values(self, section: str, key: str) -> list[str]:
        return [a.value for a in self.assignments if a.section == section and a.key == key]

    def value(self, section: str, key: str) -> str:
        """The single value of ``key``; AssertionError unless it appears exactly once."""
        found = self.values(section, key)
        assert len(found) == 1, f"[{section}] {key}= appears {len(found)} times: {found!r}"
        return found[0]

    def pairs(self, section: str | None = None) -> list[tuple[str, str]]:
        return [(a.key, a.value) for a in self.assignments if section in (None, a.section)]


# --- reading lines and assignments (fileio.c, conf-parser.c) ------------------------------------


def read_lines(data: bytes) -> Iterator[bytes]:
    """``read_line(f, LONG_LINE_MAX)`` repeated until EOF."""
    pos, end = 0, len(data)
    while pos < end:
        start = pos
        while pos < end and data[pos] not in b"\n\r\0":
            pos += 1
        line = data[start:pos]
        if len(line) >= LONG_LINE_MAX:  # read_line() checks the length before each byte
            raise UnitLoadError("line too long (ENOBUFS)")
        seen = 0  # EOL kinds already consumed: a repeated kind, or anything after NUL, ends it
        while pos < end and data[pos] in b"\n\r\0":
            kind = {10: 1, 13: 2, 0: 4}[data[pos]]
            if seen & 4 or seen & kind:
                break
            seen |= kind
            pos += 1
        yield line


def _strip(text: bytes) -> bytes:
    return text.strip(WHITESPACE)


def parse_unit(
    data: bytes | str, unit_type: str = "service", known: Mapping[str, str] | None = None
) -> UnitFile:
    """Parse one unit file's bytes like ``config_parse()`` with the sections of ``unit_type``.

    ``Exec*=`` lines of ``[Service]`` are split as they are read (with the specifier values
    ``known``), because a fatal one stops systemd's parse right there."""
    if isinstance(data, str):
        data = data.encode("utf-8", "surrogateescape")
    sections = SECTIONS.get(unit_type, ("Unit", "Install"))
    unit = UnitFile()
    state: dict[str, object] = {"section": None, "ignored": False}
    continuation: bytes | None = None
    bom_seen = False
    number = 0
    for number, raw in enumerate(read_lines(data), start=1):
        stripped = raw.lstrip(WHITESPACE)
        if stripped and stripped[0] in COMMENTS:
            continue  # comment lines vanish, even in the middle of a continuation
        line = raw
        if not bom_seen and raw.startswith(BOM):
            line, bom_seen = raw[len(BOM) :], True
        text = line if continuation is None else continuation + line
        if continuation is not None and len(text) > LONG_LINE_MAX:
            raise UnitLoadError("continuation line too long (ENOBUFS)")
        if _ends_escaped(text):
            continuation = text[:-1] + b" "
            continue
        continuation = None
        _parse_line(unit, sections, state, number, text, known)
    if continuation is not None:
        _parse_line(unit, sections, state, number + 1, continuation, known)
    return unit


def _ends_escaped(text: bytes) -> bool:
    escaped = False
    for byte in text:
        escaped = not escaped and byte == 0x5C
    return escaped


def _parse_line(
    unit: UnitFile,
    sections: tuple[str, ...],
    state: dict[str, object],
    number: int,
    raw: bytes,
    known: Mapping[str, str] | None,
) -> None:
    line = _strip(raw)
    if not line:
        return
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError:
        unit.warnings.append(f"{number}: invalid UTF-8, line ignored")
        return
    if text.startswith("["):
        if not text.endswith("]"):
            raise UnitLoadError(f"{number}: invalid section header {text!r}")
        name = text[1:-1]
        if any(ord(c) < 0x20 or c in "\"'\\\x7f" for c in name):
            raise UnitLoadError(f"{number}: bad characters in section header {text!r}")
        if name in sections:
            state.update(section=name, ignored=False)
        else:
            if not name.startswith("X-"):
                unit.warnings.append(f"{number}: unknown section {name!r}")
            state.update(section=None, ignored=True)
        return
    if state["section"] is None:
        if not state["ignored"]:
            unit.warnings.append(f"{number}: assignment outside of a section")
        return
    key, equals, value = text.partition("=")
    if not equals:
        unit.warnings.append(f"{number}: missing '=', line ignored")
        return
    if not key.strip(" \t\n\r"):
        unit.warnings.append(f"{number}: missing key name before '='")
        return
    assignment = Assignment(
        str(state["section"]), key.strip(" \t\n\r"), value.strip(" \t\n\r"), number
    )
    if assignment.section == "Service" and assignment.key.startswith("Exec") and assignment.value:
        try:
            split_exec(assignment.value, unit.warnings, known)
        except ExecFatal as err:
            raise UnitLoadError(f"{number}: {err}", "bad-setting") from None
    unit.assignments.append(assignment)


# --- words (extract-word.c, escape.c) ------------------------------------------------------------


class Extract(Flag):
    NONE = 0
    RELAX = auto()
    CUNESCAPE = auto()
    UNESCAPE_RELAX = auto()
    UNQUOTE = auto()
    DONT_COALESCE_SEPARATORS = auto()
    RETAIN_ESCAPE = auto()
    UNESCAPE_SEPARATORS = auto()


_SIMPLE_ESCAPES = {
    ord("a"): 7,
    ord("b"): 8,
    ord("f"): 12,
    ord("n"): 10,
    ord("r"): 13,
    ord("t"): 9,
    ord("v"): 11,
    ord("\\"): 92,
    ord('"'): 34,
    ord("'"): 39,
    ord("s"): 32,
}


def cunescape_one(text: bytes, pos: int) -> tuple[bytes, int]:
    """The bytes one escape (after the backslash, at ``pos``) stands for, and its length."""
    c = text[pos] if pos < len(text) else 0
    if c in _SIMPLE_ESCAPES:
        return bytes([_SIMPLE_ESCAPES[c]]), 1
    digits = {ord("x"): (2, 16), ord("u"): (4, 16), ord("U"): (8, 16)}
    if c in digits:
        count, base = digits[c]
        chunk = text[pos + 1 : pos + 1 + count]
        if len(chunk) != count or not re.fullmatch(rb"[0-9a-fA-F]+", chunk):
            raise WordError("bad escape")
        number = int(chunk, base)
        if number == 0:
            raise WordError("escaped NUL")
        if c == ord("x"):
            return bytes([number]), 1 + count
        if number > 0x10FFFF or 0xD800 <= number <= 0xDFFF:
            raise WordError("invalid code point")
        return chr(number).encode("utf-8"), 1 + count
    if ord("0") <= c <= ord("7"):
        chunk = text[pos : pos + 3]
        if len(chunk) != 3 or not re.fullmatch(rb"[0-7]{3}", chunk):
            raise WordError("bad octal escape")
        number = int(chunk, 8)
        if number == 0 or number > 255:
            raise WordError("bad octal escape")
        return bytes([number]), 3
    raise WordError("unknown escape")


def extract_first_word(
    text: bytes, pos: int | None, flags: Extract, separators: bytes = WHITESPACE
) -> tuple[bytes | None, int | None]:
    """One step of ``extract_first_word()``: (word or None at the end, next position or None)."""
    if pos is None:
        return None, None
    end = len(text)
    # skip leading separators
    while pos < end and text[pos] in separators:
        if Extract.DONT_COALESCE_SEPARATORS in flags:
            return b"", pos + 1
        pos += 1
    if pos >= end:
        return (b"", None) if Extract.DONT_COALESCE_SEPARATORS in flags else (None, None)
    out = bytearray()
    quote = 0
    while True:
        c = text[pos] if pos < end else 0
        if c == 0x5C and Extract.RETAIN_ESCAPE not in flags:  # backslash
            pos += 1
            if pos >= end:
                if Extract.UNESCAPE_RELAX in flags and (not quote or Extract.RELAX in flags):
                    out += b"\\"
                    return bytes(out), None
                if Extract.RELAX in flags:
                    return bytes(out), None
                raise WordError("trailing backslash")
            if Extract.CUNESCAPE in flags or Extract.UNESCAPE_SEPARATORS in flags:
                try:
                    if Extract.CUNESCAPE not in flags:
                        raise WordError("no C escapes")
                    chunk, length = cunescape_one(text, pos)
                except WordError:
                    if Extract.UNESCAPE_SEPARATORS in flags and text[pos] in separators + b"\\":
                        chunk, length = text[pos : pos + 1], 1  # an escaped separator
                    elif Extract.UNESCAPE_RELAX in flags:
                        chunk, length = b"\\" + text[pos : pos + 1], 1
                    else:
                        raise
                out += chunk
                pos += length
            else:
                out.append(text[pos])
                pos += 1
            continue
        if quote:
            if pos >= end:
                if Extract.RELAX in flags:
                    return bytes(out), None
                raise WordError("unbalanced quotes")
            if c == quote:
                quote = 0
            else:
                out.append(c)
            pos += 1
            continue
        if pos >= end:
            return bytes(out), None
        if c in b"'\"" and Extract.UNQUOTE in flags:
            quote = c
            pos += 1
            continue
        if c in separators:
            if Extract.DONT_COALESCE_SEPARATORS in flags:
                return bytes(out), pos + 1
            while pos < end and text[pos] in separators:
                pos += 1
            return bytes(out), (pos if pos < end else None)
        out.append(c)
        pos += 1


def split_words(value: str, flags: Extract, warn: list[str] | None = None) -> list[str]:
    """All words of ``value``; like ``extract_first_word_and_warn()`` an unknown escape is kept
    verbatim with a warning (appended to ``warn``), unbalanced quoting raises WordError."""
    data = value.encode("utf-8", "surrogateescape")
    words: list[str] = []
    pos: int | None = 0
    while True:
        try:
            word, nxt = extract_first_word(data, pos, flags)
        except WordError:
            if Extract.UNESCAPE_RELAX in flags:
                raise
            word, nxt = extract_first_word(data, pos, flags | Extract.UNESCAPE_RELAX)
            if warn is not None:
                warn.append(f"ignoring unknown escape sequences: {word!r}")
        if word is None:
            return words
        words.append(word.decode("utf-8", "surrogateescape"))
        pos = nxt


# --- specifiers (specifier.c) -------------------------------------------------------------------


def resolve_specifiers(value: str, known: Mapping[str, str] | None = None) -> str:
    """``specifier_printf()``: ``%%`` becomes ``%``; ``%x`` is looked up in ``known`` (systemd's
    values for the unit at hand) and without an entry raises SpecifierError, because systemd
    would either substitute something or refuse the setting. A lone trailing ``%`` is kept."""
    out: list[str] = []
    i = 0
    while i < len(value):
        ch = value[i]
        if ch != "%" or i + 1 == len(value):
            out.append(ch)
            i += 1
            continue
        spec = value[i + 1]
        if spec == "%":
            out.append("%")
        elif known is not None and spec in known:
            out.append(known[spec])
        else:
            raise SpecifierError(f"specifier %{spec} in {value!r}")
        i += 2
    return "".join(out)


# --- command lines (load-fragment.c config_parse_exec, env-util.c replace_env_argv) ---------------


@dataclass(frozen=True)
class Command:
    path: str
    argv: list[str]
    prefixes: str  # the "-@:+!" characters that preceded the path


def _valid_path(path: str) -> bool:
    raw = path.encode("utf-8", "surrogateescape")
    if not raw or len(raw) >= PATH_MAX:
        return False
    return all(len(part) <= NAME_MAX for part in raw.split(b"/"))


class ExecFatal(ValueError):
    """config_parse_exec() returned -ENOEXEC: systemd stops reading the file and the unit
    becomes "bad-setting" ("Unit configuration has fatal error, unit will not be started")."""


def split_exec(
    value: str, warn: list[str] | None = None, known: Mapping[str, str] | None = None
) -> list[Command]:
    """The commands of an ``ExecStart=`` value, as systemd stores them (before $-expansion).

    Like config_parse_exec(): a first word that cannot be split ends the line quietly (the
    commands before it stay); other errors raise :class:`ExecFatal`, unless the command has the
    ``-`` prefix, which turns them into a warning.
    """
    flags = Extract.UNQUOTE | Extract.CUNESCAPE
    data = value.encode("utf-8", "surrogateescape")
    commands: list[Command] = []
    pos: int | None = 0
    while True:
        try:
            first, pos = _word(data, pos, flags, warn)
        except WordError as err:
            _note(warn, f"ignoring the rest of the command line: {err}")
            return commands
        if first is None:
            return commands
        if first == b";":
            continue
        prefixes, text = _exec_prefixes(first.decode("utf-8", "surrogateescape"))
        try:
            command, pos = _exec_command(data, pos, prefixes, text, warn, known)
        except ValueError as err:
            if "-" not in prefixes:
                raise ExecFatal(str(err)) from None
            _note(warn, f"ignoring command: {err}")
            return commands
        commands.append(command)
        if pos is None:
            return commands


def _exec_command(
    data: bytes,
    pos: int | None,
    prefixes: str,
    text: str,
    warn: list[str] | None,
    known: Mapping[str, str] | None,
) -> tuple[Command, int | None]:
    path = resolve_specifiers(text, known)
    if not path or path.endswith("/") or any(ord(c) < 0x20 or c in "\"'\\\x7f" for c in path):
        raise ValueError(f"bad executable path {path!r}")
    if not (_valid_path(path) if path.startswith("/") else "/" not in path):
        raise ValueError(f"neither an absolute path nor a file name: {path!r}")
    argv = [] if "@" in prefixes else [path]
    flags = Extract.UNQUOTE | Extract.CUNESCAPE
    while pos is not None and pos < len(data):
        rest = data[pos:]
        if rest[:1] == b";" and (len(rest) == 1 or rest[1] in WHITESPACE):
            pos = pos + 1 + len(rest[1:]) - len(rest[1:].lstrip(WHITESPACE))
            break
        if rest[:2] == b"\\;" and (len(rest) == 2 or rest[2] in WHITESPACE):
            argv.append(";")
            pos = pos + 2 + len(rest[2:]) - len(rest[2:].lstrip(WHITESPACE))
            continue
        word, pos = _word(data, pos, flags, warn)
        if word is None:
            break
        argv.append(resolve_specifiers(word.decode("utf-8", "surrogateescape"), known))
    else:
        pos = None
    if not argv:
        raise ValueError("empty argv")
    return Command(path, argv, prefixes), pos


def _exec_prefixes(word: str) -> tuple[str, str]:
    """Split the ``-@:+!`` prefixes off a command's first word, in config_parse_exec()'s order:
    each at most once, ``+`` and ``!`` exclusive, ``!!`` allowed."""
    taken = ""
    for i, ch in enumerate(word):
        once = ch in "-@:" and ch not in taken
        plus = ch == "+" and "+" not in taken and "!" not in taken
        bang = ch == "!" and "+" not in taken and taken.count("!") < 2
        if not (once or plus or bang):
            return taken, word[i:]
        taken += ch
    return taken, ""


def _word(
    data: bytes, pos: int | None, flags: Extract, warn: list[str] | None
) -> tuple[bytes | None, int | None]:
    try:
        return extract_first_word(data, pos, flags)
    except WordError:
        word, nxt = extract_first_word(data, pos, flags | Extract.UNESCAPE_RELAX)
        if warn is not None:
            warn.append(f"ignoring unknown escape sequences: {word!r}")
        return word, nxt


_ENV_NAME_CHARS = set("0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ_")


def replace_env(word: str, env: Mapping[str, str]) -> str:
    """``replace_env()`` without extended syntax: ``${NAME}`` substituted, ``$$`` -> ``$``."""
    out: list[str] = []
    i = 0
    while i < len(word):
        if word[i] != "$" or i + 1 == len(word):
            out.append(word[i])
            i += 1
        elif word[i + 1] == "$":
            out.append("$")
            i += 2
        elif word[i + 1] == "{":
            close = word.find("}", i + 2)
            name = word[i + 2 : close]
            if close < 0 or ":" in name:
                out.append(word[i:])  # unterminated or unsupported syntax: left as is
                break
            out.append(env.get(name, ""))
            i = close + 1
        else:
            out.append("$")
            i += 1
    return "".join(out)


def replace_env_argv(argv: list[str], env: Mapping[str, str]) -> list[str]:
    """The argv a process receives: a word ``$NAME`` is replaced by the variable's words (none if
    unset), other words go through :func:`replace_env`."""
    result: list[str] = []
    for word in argv:
        if word.startswith("$") and word[1:2] not in ("{", "$"):
            value = env.get(word[1:])
            if value is not None:
                result += split_words(value, Extract.RELAX | Extract.UNQUOTE)
            continue
        result.append(replace_env(word, env))
    return result


# --- Environment= (config_parse_environ, env-util.c) ----------------------------------------------


def env_assignment_is_valid(assignment: str) -> bool:
    name, equals, value = assignment.partition("=")
    if not equals or not name or name[0].isdigit() or set(name) - _ENV_NAME_CHARS:
        return False
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return not any((ord(c) < 0x20 and c not in "\t\n") or ord(c) == 0x7F for c in value)


def apply_environment(
    env: dict[str, str],
    value: str,
    warn: list[str] | None = None,
    known: Mapping[str, str] | None = None,
) -> None:
    """Apply one ``Environment=`` line to ``env`` like ``config_parse_environ()``: an empty value
    resets; words are applied one by one, so a syntax error (unbalanced quotes, an unknown
    escape: no relaxed retry here) keeps the words before it and drops the rest; a word with a
    bad specifier or an invalid assignment is skipped."""
    if not value:
        env.clear()
        return
    data = value.encode("utf-8", "surrogateescape")
    pos: int | None = 0
    while True:
        try:
            raw, pos = extract_first_word(data, pos, Extract.CUNESCAPE | Extract.UNQUOTE)
        except WordError:
            _note(warn, f"invalid syntax, ignoring the rest of {value!r}")
            return
        if raw is None:
            return
        try:
            resolved = resolve_specifiers(raw.decode("utf-8", "surrogateescape"), known)
        except SpecifierError as err:
            _note(warn, str(err))
            continue
        if not env_assignment_is_valid(resolved):
            _note(warn, f"invalid environment assignment: {resolved!r}")
            continue
        name, _, val = resolved.partition("=")
        env[name] = val


def parse_environment(
    value: str, warn: list[str] | None = None, known: Mapping[str, str] | None = None
) -> list[tuple[str, str]]:
    """The ``NAME=value`` pairs one ``Environment=`` line sets (see :func:`apply_environment`)."""
    env: dict[str, str] = {}
    apply_environment(env, value, warn, known)
    return list(env.items())


def _note(warn: list[str] | None, message: str) -> None:
    if warn is not None:
        warn.append(message)


# --- other values ---------------------------------------------------------------------------------


def unit_name_is_valid(name: str) -> bool:
    """``unit_name_is_valid(name, UNIT_NAME_PLAIN | UNIT_NAME_INSTANCE | UNIT_NAME_TEMPLATE)``."""
    raw = name.encode("utf-8", "surrogateescape")
    if not raw or len(raw) >= UNIT_NAME_MAX:
        return False
    stem, dot, suffix = raw.rpartition(b".")
    if not dot or not stem or suffix.decode("ascii", "replace") not in UNIT_TYPES:
        return False
    if any(b not in _UNIT_CHARS and b != ord("@") for b in stem) or stem.startswith(b"@"):
        return False
    at = stem.find(b"@")
    return at < 0 or stem.count(b"@") == 1


def split_load_credential(value: str) -> tuple[str, str]:
    """``LoadCredential=ID:PATH``: the id up to the first ``:`` (backslashes consumed, no
    unquoting), the rest verbatim; both specifier-expanded."""
    data = value.encode("utf-8", "surrogateescape")
    word, pos = extract_first_word(data, 0, Extract.DONT_COALESCE_SEPARATORS, separators=b":")
    ident = resolve_specifiers((word or b"").decode("utf-8", "surrogateescape"))
    rest = data[pos:].decode("utf-8", "surrogateescape") if pos is not None else ""
    return ident, resolve_specifiers(rest)


def split_exec_directory(value: str) -> list[tuple[str, str | None]]:
    """``StateDirectory=`` (systemd >= 250): words, each ``SOURCE[:SYMLINK]``."""
    result: list[tuple[str, str | None]] = []
    inner = Extract.CUNESCAPE | Extract.UNESCAPE_SEPARATORS
    for word in split_words(value, Extract.UNQUOTE | Extract.RETAIN_ESCAPE):
        data = word.encode("utf-8", "surrogateescape")
        src, pos = extract_first_word(data, 0, inner, separators=b":")
        dest, _ = extract_first_word(data, pos, inner, separators=b":")
        result.append(
            (
                resolve_specifiers((src or b"").decode("utf-8", "surrogateescape")),
                None
                if dest is None
                else resolve_specifiers(dest.decode("utf-8", "surrogateescape")),
            )
        )
    return result


# --- systemd's own view: the unit dump of `systemd-analyze verify` at debug level ----------------


@dataclass
class UnitDump:
    """One unit as systemd 252 loaded it (``unit_dump()``, printed by ``systemd-analyze verify``
    when ``SYSTEMD_LOG_LEVEL=debug``): ``Key: value`` lines and the parsed command lines."""

    name: str
    text: bytes
    commands: dict[str, list[list[str]]] = field(default_factory=dict)

    def values(self, key: str) -> list[str]:
        prefix = f"\t\t{key}: ".encode()
        return [
            line[len(prefix) :].decode("utf-8", "surrogateescape")
            for line in self.text.split(b"\n")
            if line.startswith(prefix)
        ]


_DUMP_ESCAPES = {ord(k): ord(v) for k, v in zip("ntrvabf", "\n\t\r\v\a\b\f", strict=True)}


def dump_unescape(text: str) -> str:
    """Undo the C escaping (``cescape()``) some dump values get, e.g. a unix socket path."""
    raw = text.encode("utf-8", "surrogateescape")
    out, pos = bytearray(), 0
    while pos < len(raw):
        if raw[pos] == 0x5C and pos + 1 < len(raw):
            nxt = raw[pos + 1]
            if nxt in _DUMP_ESCAPES:
                out.append(_DUMP_ESCAPES[nxt])
                pos += 2
            elif 0x30 <= nxt <= 0x37:
                out.append(int(raw[pos + 1 : pos + 4], 8))
                pos += 4
            else:
                out.append(nxt)
                pos += 2
        else:
            out.append(raw[pos])
            pos += 1
    return out.decode("utf-8", "surrogateescape")


def _dump_words(data: bytes, pos: int) -> tuple[list[str], int]:
    """Words of ``quote_command_line(argv, SHELL_ESCAPE_EMPTY)`` up to the unquoted newline:
    bare words, or ``"..."`` with C escapes (``\\n``, ``\\t``..., octal ``\\NNN`` for other
    control and invalid UTF-8 bytes, a backslash before ``"\\`$``), as systemd 252 prints them."""
    words: list[str] = []
    word = bytearray()
    in_word = quoted = False
    while pos < len(data):
        c = data[pos]
        pos += 1
        if quoted:
            if c == 0x5C:
                nxt = data[pos]
                if nxt in _DUMP_ESCAPES:
                    word.append(_DUMP_ESCAPES[nxt])
                    pos += 1
                elif 0x30 <= nxt <= 0x37:
                    word.append(int(data[pos : pos + 3], 8))
                    pos += 3
                else:
                    word.append(nxt)
                    pos += 1
            elif c == 0x22:
                quoted = False
            else:
                word.append(c)
        elif c == 0x22:
            quoted = in_word = True
        elif c in b" \n":
            if in_word:
                words.append(word.decode("utf-8", "surrogateescape"))
            word, in_word = bytearray(), False
            if c == 0x0A:
                break
        else:
            word.append(c)
            in_word = True
    return words, pos


def parse_dump(output: bytes) -> dict[str, UnitDump]:
    """Split ``systemd-analyze verify`` debug output into its ``-> Unit NAME:`` blocks."""
    units: dict[str, UnitDump] = {}
    for match in re.finditer(rb"^\t-> Unit ([^\n]+):\n", output, re.MULTILINE):
        name = match.group(1).decode("utf-8", "surrogateescape")
        nxt = output.find(b"\n\t-> Unit ", match.end())
        block = output[match.end() : nxt + 1 if nxt >= 0 else len(output)]
        dump = UnitDump(name, block)
        kind = ""
        pos = 0
        while pos < len(block):
            line_end = block.find(b"\n", pos)
            line_end = len(block) if line_end < 0 else line_end
            line = block[pos:line_end]
            header = re.fullmatch(rb"\t\t-> (Exec\w+):", line)
            if header:
                kind = header.group(1).decode()
            if line.startswith(b"\t\t\tCommand Line: "):
                argv, pos = _dump_words(block, pos + len(b"\t\t\tCommand Line: "))
                dump.commands.setdefault(kind, []).append(argv)
                continue
            pos = line_end + 1
        units[name] = dump
    return units
