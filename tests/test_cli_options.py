"""The shared CLI options (cpsysd.cli.options): every command that reads a description finds it
by the same rule and fails the same way, run as real processes in a scratch directory."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from cpsysd.cli import options
from cpsysd.errors import CpsysdError

CPSYSD = [sys.executable, "-m", "cpsysd"]

# Every command that reads a description, with the arguments it needs besides -c. None of
# them gets far enough to change anything: each description below is missing or invalid.
COMMANDS = {
    "generate": ["generate", "-o", "-"],
    "verify": ["verify"],
    "install": ["install", "x", "--root", "root", "--no-start"],
    "try": ["try"],
    "nginx": ["nginx"],
    "debian": ["debian", "-o", "debian"],
    "cert renew": ["cert", "renew", "--no-restart"],
}
HINT = "(pass -c FILE, or create one with: cpsysd init --name NAME --entry MODULE:OBJECT)"


def run(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CPSYSD, *args], capture_output=True, text=True, cwd=cwd, check=False)


def one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("cpsysd: error: ")
    return lines[0]


def description(key: str) -> str:
    """A description valid but for one unknown key, so the error names the file that was read."""
    return f'name = "x"\nentry = "hello:Root"\n{key} = 1\n'


@pytest.mark.parametrize("command", COMMANDS)
def test_no_description_is_the_same_error_everywhere(tmp_path: Path, command: str) -> None:
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "unrelated"\n')
    result = run(COMMANDS[command], tmp_path)
    looked = "./cpsysd.toml, ./pyproject.toml with [tool.cpsysd]"
    if command == "install":
        looked += ", /etc/cpsysd/x.toml"
    assert (
        one_line_error(result)
        == f"cpsysd: error: no description found (looked for {looked}) {HINT}"
    )
    assert result.returncode == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pyproject.toml"]


@pytest.mark.parametrize("command", COMMANDS)
def test_a_missing_config_file_is_the_same_error_everywhere(tmp_path: Path, command: str) -> None:
    (tmp_path / "cpsysd.toml").write_text(description("not_this_one"))
    result = run([*COMMANDS[command], "-c", "gone.toml"], tmp_path)
    assert one_line_error(result) == (
        "cpsysd: error: gone.toml: no such file "
        "(create one with: cpsysd init --name NAME --entry MODULE:OBJECT)"
    )
    assert result.returncode == 2


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_reads_cpsysd_toml_first(tmp_path: Path, command: str) -> None:
    (tmp_path / "cpsysd.toml").write_text(description("from_cpsysd_toml"))
    (tmp_path / "pyproject.toml").write_text("[tool.cpsysd]\n" + description("from_pyproject"))
    result = run(COMMANDS[command], tmp_path)
    assert "from_cpsysd_toml" in one_line_error(result)
    assert result.returncode == 2


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_falls_back_to_pyproject(tmp_path: Path, command: str) -> None:
    (tmp_path / "pyproject.toml").write_text(
        '[project]\nname = "x"\n[tool.cpsysd]\n' + description("from_pyproject")
    )
    result = run(COMMANDS[command], tmp_path)
    assert "from_pyproject" in one_line_error(result)
    assert result.returncode == 2


def test_generate_from_pyproject(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text('[tool.cpsysd]\nname = "pp"\nentry = "hello:Root"\n')
    result = run(["generate", "-o", "-"], tmp_path)
    assert result.returncode == 0, result.stderr
    assert "# ---- pp.service ----" in result.stdout
    assert f"WorkingDirectory={tmp_path}" in result.stdout


@pytest.mark.parametrize("command", COMMANDS)
def test_every_help_states_the_rule(tmp_path: Path, command: str) -> None:
    result = run([*COMMANDS[command][: 2 if command == "cert renew" else 1], "--help"], tmp_path)
    assert result.returncode == 0, result.stderr
    text = " ".join(result.stdout.split())
    assert "-c, --config FILE" in text
    assert "Without -c: ./cpsysd.toml, else ./pyproject.toml if it has [tool.cpsysd]" in text
    assert ("else /etc/cpsysd/NAME.toml" in text) == (command == "install")


def test_by_name_the_lookup_ends_in_the_system_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    system = tmp_path / "etc"
    system.mkdir()
    (system / "shop.toml").write_text(description("system"))
    monkeypatch.setattr(options, "SYSTEM_DESCRIPTION_DIR", system)
    monkeypatch.chdir(tmp_path)
    assert options.find_description(None, "shop") == system / "shop.toml"
    with pytest.raises(CpsysdError, match="no description found"):
        options.find_description(None)  # without a name, /etc/cpsysd is never looked at
    (tmp_path / "pyproject.toml").write_text("[tool.cpsysd]\n")
    assert options.find_description(None, "shop") == Path("pyproject.toml")
    (tmp_path / "cpsysd.toml").write_text("")
    assert options.find_description(None, "shop") == Path("cpsysd.toml")
    assert options.find_description(Path("given.toml"), "shop") == Path("given.toml")


def test_an_unreadable_pyproject_is_reported_not_skipped(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text("[tool.cpsysd\n")
    result = run(["verify"], tmp_path)
    assert "pyproject.toml: invalid TOML" in one_line_error(result)
    assert result.returncode == 2
