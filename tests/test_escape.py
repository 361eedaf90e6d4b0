"""Escaping by systemd's rules, checked against systemd's own tools."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from cpsysd import escape


@pytest.mark.parametrize(
    "text", ["a/b/c", ".hidden", "ünï-côde", "with space", "a:b_c.d", "-lead", "x\\y", "%i$"]
)
def test_systemd_escape_matches_the_tool(text: str) -> None:
    tool = subprocess.run(
        ["systemd-escape", "--", text], capture_output=True, text=True, check=True
    )
    assert escape.systemd_escape(text) == tool.stdout.strip()


@pytest.mark.parametrize("name", ["hello", "my-app", "app_2", "a.b", "x:y", "A1"])
def test_accepted_unit_names_are_valid_for_systemd(name: str) -> None:
    assert escape.check_unit_stem(name) == name
    tool = subprocess.run(
        ["systemd-escape", "--mangle", f"{name}.service"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert tool.stdout.strip() == f"{name}.service"  # mangling leaves valid names alone


@pytest.mark.parametrize("name", ["a/b", "a b", "a@b", "-x", ".x", "é", "", "x" * 201, "a\nb"])
def test_rejected_unit_names(name: str) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - message checked elsewhere
        escape.check_unit_stem(name)


@pytest.mark.parametrize(
    ("word", "quoted"),
    [
        ("/usr/bin/python3", "/usr/bin/python3"),
        ("100%", '"100%%"'),
        ("$HOME", '"$$HOME"'),
        ("a b", '"a b"'),
        ('say "hi"', '"say \\"hi\\""'),
        ("back\\slash", '"back\\\\slash"'),
        ("", '""'),
    ],
)
def test_quote_word(word: str, quoted: str) -> None:
    assert escape.quote_word(word) == quoted


@pytest.mark.parametrize("bad", ["a\nb", "a\rb", "tab\there", "nul\x00", "del\x7f", "end\\"])
def test_control_characters_and_continuations_are_rejected(bad: str) -> None:
    with pytest.raises(ValueError):  # noqa: PT011
        escape.quote_word(bad)
    with pytest.raises(ValueError):  # noqa: PT011
        escape.unit_value(bad)


def test_quoted_words_pass_systemd_analyze(tmp_path: Path) -> None:
    """systemd parses the command line we write without a single warning."""
    words = ["/bin/echo", "plain", "100%", "$HOME", "a b", 'q"uote', "back\\slash", "", "ünï"]
    unit = tmp_path / "quoting.service"
    unit.write_text(
        "[Service]\nType=oneshot\nExecStart=" + escape.command_line(words) + "\n"
        "Environment=" + escape.quote_assignment("K", 'v "1" \\ %i $X') + "\n"
    )
    result = subprocess.run(
        ["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0
    assert result.stderr == ""
