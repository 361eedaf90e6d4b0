"""tests/unitparse.py reads unit files like systemd 252 does: checked on systemd's documented
examples and, differentially, against systemd itself (the unit dump of
``SYSTEMD_LOG_LEVEL=debug systemd-analyze verify``) on a few hundred randomly built hostile units.
The other test_hostile_* modules rely on this parser, so it must be right."""

from __future__ import annotations

import os
import random
import subprocess
from pathlib import Path

import pytest

from tests import unitparse as up
from tests.unitparse import Extract

SEED = int(os.environ.get("CPSYSD_FUZZ_SEED", "20261124"))


def test_syntax_manual_example() -> None:
    # systemd.syntax(7), Example 1, with its "[Section A]" names mapped to real sections.
    text = (
        "[Unit]\nKeyOne=value 1\nKeyTwo=value 2\n\n# a comment\n\n[Service]\n"
        'Setting="something" "some thing" "..."\nKeyTwo=value 2 \\\n       value 2 continued\n\n'
        "[Install]\nKeyThree=value 3\\\n# this line is ignored\n; this line is ignored too\n"
        "       value 3 continued\n"
    )
    unit = up.parse_unit(text)
    assert unit.pairs() == [
        ("KeyOne", "value 1"),
        ("KeyTwo", "value 2"),
        ("Setting", '"something" "some thing" "..."'),
        ("KeyTwo", "value 2         value 2 continued"),
        ("KeyThree", "value 3        value 3 continued"),
    ]
    assert unit.warnings == []


@pytest.mark.parametrize(
    ("data", "lines"),
    [
        (b"a\nb", [b"a", b"b"]),
        (b"a\r\nb\n", [b"a", b"b"]),
        (b"a\n\rb", [b"a", b"b"]),  # \n\r is one line end too (read_line()'s EOL kinds)
        (b"a\n\nb", [b"a", b"", b"b"]),
        (b"a\rb\0c", [b"a", b"b", b"c"]),  # a bare CR or NUL ends a line
        (b"a\0\nb", [b"a", b"", b"b"]),  # nothing follows a NUL in the same line end
    ],
)
def test_line_ends(data: bytes, lines: list[bytes]) -> None:
    assert list(up.read_lines(data)) == lines


def test_carriage_return_inside_a_value_splits_the_line() -> None:
    unit = up.parse_unit("[Service]\nEnvironment=A=1\rExecStartPre=/bin/evil\n")
    assert unit.pairs() == [("Environment", "A=1"), ("ExecStartPre", "/bin/evil")]


def test_line_limit() -> None:
    ok = "[Unit]\nDescription=" + "x" * (up.LONG_LINE_MAX - 1 - len("Description=")) + "\n"
    assert len(up.parse_unit(ok).value("Unit", "Description")) == up.LONG_LINE_MAX - 13
    with pytest.raises(up.UnitLoadError):
        up.parse_unit(ok.replace("=x", "=xx"))


def test_structure_errors_and_warnings() -> None:
    with pytest.raises(up.UnitLoadError):
        up.parse_unit("[Unit\nDescription=x\n")
    unit = up.parse_unit(
        "Description=outside\n[Unit]\nNoEquals\n=value\n[Bogus]\nA=b\n[X-Ok]\nB=c\n"
        "[Service]\nKey = spaced value \t\nUtf8=\xff\n".encode("latin-1")
    )
    assert unit.pairs() == [("Key", "spaced value")]
    assert len(unit.warnings) == 5


def test_bom_and_continuation_at_eof() -> None:
    unit = up.parse_unit("\ufeff[Unit]\nDescription=a\\")
    assert unit.pairs() == [("Description", "a")]


@pytest.mark.parametrize(
    ("value", "words"),
    [
        ("a b  c", ["a", "b", "c"]),
        ("'a b' \"c d\"", ["a b", "c d"]),
        ('a"b c"d', ["ab cd"]),  # quotes may start anywhere in a word
        (r'"a\"b" \x41\101 "\s"', ['a"b', "AA", " "]),
        (r'"\u00e9" \U0001F600', ["é", "😀"]),
        (r"'\n'", ["\n"]),  # C escapes apply inside single quotes too
        ('""', [""]),
    ],
)
def test_words(value: str, words: list[str]) -> None:
    assert up.split_words(value, Extract.UNQUOTE | Extract.CUNESCAPE) == words


def test_word_errors() -> None:
    with pytest.raises(up.WordError):
        up.split_words('"open', Extract.UNQUOTE | Extract.CUNESCAPE)
    warnings: list[str] = []
    assert up.split_words(r"a\qb \x00", Extract.UNQUOTE | Extract.CUNESCAPE, warnings) == [
        r"a\qb",
        r"\x00",
    ]
    assert len(warnings) == 2


def test_exec_command_lines() -> None:
    [cmd] = up.split_exec(r'/bin/echo "a b" \; ";" %% $$X ${Y}')
    assert cmd.argv == ["/bin/echo", "a b", ";", ";", "%", "$$X", "${Y}"]
    first, second = up.split_exec("-/bin/a x ; @/bin/b argv0 y")
    assert (first.prefixes, first.argv) == ("-", ["/bin/a", "x"])
    assert (second.path, second.argv) == ("/bin/b", ["argv0", "y"])
    assert up.split_exec("/bin/x%n", known={"n": "a.service"})[0].path == "/bin/xa.service"
    for bad in ("/bin/%q", "/bin/", "/bin/a\x01"):
        with pytest.raises(ValueError):  # noqa: PT011 - WordError, SpecifierError or ValueError
            up.split_exec(bad)


def test_exec_time_environment_expansion() -> None:
    env = {"X": "one two", "Y": "y y"}
    argv = ["/bin/e", "$X", "${Y}", "$$X", "a$Xb", "$UNSET", "$$", "${X:-d}"]
    expected = ["/bin/e", "one", "two", "y y", "$X", "a$Xb", "$", "${X:-d}"]
    assert up.replace_env_argv(argv, env) == expected


def test_environment_lines() -> None:
    warnings: list[str] = []
    pairs = up.parse_environment(r'"A=1 2" B=%% "C=\"q\"" 3x=1 D E=%q F=\q G=1', warnings)
    assert pairs == [("A", "1 2"), ("B", "%"), ("C", '"q"')]  # \q: the rest is dropped
    assert len(warnings) == 4
    env = {"A": "1"}
    up.apply_environment(env, "")
    assert env == {}


def test_other_values() -> None:
    assert up.unit_name_is_valid("a-b.c:d.service")
    assert not up.unit_name_is_valid("a" * 248 + ".service")
    assert not up.unit_name_is_valid("a b.service")
    assert up.split_load_credential("tls-key:/etc/a:b") == ("tls-key", "/etc/a:b")
    assert up.split_exec_directory(r"app app2:link a\:b zz0:") == [
        ("app", None),
        ("app2", "link"),
        ("a:b", None),  # seen in systemd-analyze's dump of such a unit
        ("zz0", None),
    ]


# --- differential: unitparse against systemd-analyze's unit dump ---------------------------------

_PIECES = [
    "a",
    "b1",
    "x y",
    " ",
    "  ",
    "\t",
    '"',
    "'",
    "\\",
    "\\\\",
    '\\"',
    "\\'",
    "\\n",
    "\\t",
    "\\s",
    "\\x41",
    "\\x7e",
    "\\101",
    "\\u00e9",
    "\\U0001F600",
    "\\q",
    "%%",
    "%n",
    "%p",
    "$",
    "$$",
    "$X",
    "${X}",
    ";",
    "\\;",
    "é",
    "日本",
    "=",
    "==",
    "#",
    "@",
    "-",
    "!",
    "+",
    ":",
    "{}",
    "\r",
    "\n",
    "\x00",
    "\x0b",
    "\x0c",
    "\u00a0",
    "\ufeff",
    "[X]",
    "\nA=1",
    "\\\n",
]  # fmt: skip  (raw control characters too: they may split lines and continue them)


def _fuzz_value(rng: random.Random) -> str:
    return "".join(rng.choice(_PIECES) for _ in range(rng.randint(0, 8)))


def _wrap(key: str, value: str, rng: random.Random) -> str:
    """``key=value``, sometimes continued over several lines with comments in between."""
    line = f"{key}={value}"
    if " " in value and rng.random() < 0.3:
        cut = value.index(" ")
        comment = rng.choice(["", "# c \\\n", "; c\n", "  # indented\n"])
        line = f"{key}={value[:cut]}\\\n{comment}{value[cut:]}"
    return line + "\n"


def _fuzz_unit(index: int, rng: random.Random) -> tuple[str, str]:
    name = f"fz{index}.service"
    text = "[Unit]\n" + _wrap("Description", _fuzz_value(rng), rng)
    text += "[Service]\n" + _wrap("ExecStart", "/bin/true " + _fuzz_value(rng), rng)
    for _ in range(rng.randint(0, 2)):
        text += _wrap("Environment", _fuzz_value(rng), rng)
    return name, text


def systemd_dump(directory: Path, names: list[str]) -> tuple[dict[str, up.UnitDump], str]:
    result = subprocess.run(
        ["systemd-analyze", "verify", *(str(directory / n) for n in names)],
        capture_output=True,
        env={**os.environ, "SYSTEMD_LOG_LEVEL": "debug", "SYSTEMD_LOG_COLOR": "0"},
        check=False,
        timeout=120,
    )
    return up.parse_dump(result.stdout), result.stderr.decode("utf-8", "replace")


def test_differential_against_systemd(tmp_path: Path) -> None:
    rng = random.Random(SEED)
    units = dict(_fuzz_unit(i, rng) for i in range(400))
    for name, text in units.items():
        (tmp_path / name).write_text(text)
    dumps, stderr = systemd_dump(tmp_path, list(units))
    compared = 0
    for name, text in units.items():
        known = {"n": name, "p": name.removesuffix(".service")}
        context = f"seed {SEED}, {name}:\n{text!r}"
        try:
            ours = up.parse_unit(text, known=known)
        except up.UnitLoadError as err:
            kind = err.kind
            message = {
                "error": "failed to load properly",
                "bad-setting": "has a bad unit file setting",
            }
        else:
            kind = ""
        if kind:
            assert f"Unit {name} {message[kind]}" in stderr, context
            continue
        commands = [
            command
            for line in ours.values("Service", "ExecStart")
            for command in up.split_exec(line, known=known)
        ]
        if len(commands) != 1:  # no command, or several (only Type=oneshot may have more)
            assert f"{name}:" in stderr, context
            continue
        dump = dumps[name]
        assert dump.commands["ExecStart"] == [commands[0].argv], context
        expected_env: dict[str, str] = {}
        for line in ours.values("Service", "Environment"):
            warnings: list[str] = []
            up.apply_environment(expected_env, line, warnings, known)
            assert not warnings or f"{name}:" in stderr, context
        rendered = "".join(f"\t\tEnvironment: {k}={v}\n" for k, v in expected_env.items())
        assert rendered.encode() in dump.text, context
        descriptions = ours.values("Unit", "Description")
        description = up.resolve_specifiers(descriptions[-1], known) if descriptions else ""
        assert dump.values("Description") == [description or name], context
        compared += 1
    assert compared > 200, "the generator should mostly build loadable units"
