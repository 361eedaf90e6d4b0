"""The init/generate/verify/install/uninstall commands, run as real processes."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import EXAMPLE

CPSYSD = [sys.executable, "-m", "cpsysd"]


def run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CPSYSD, *args], capture_output=True, text=True, cwd=cwd, check=False)


def assert_one_line_error(result: subprocess.CompletedProcess[str], *words: str) -> None:
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("cpsysd: error: ")
    for word in words:
        assert word in lines[0]


@pytest.fixture
def app_dir() -> Iterator[Path]:
    """The example app in a directory the service's user (and verify's import probe, which
    runs as nobody under root) can enter; pytest's own tmp_path is 0700."""
    path = Path(tempfile.mkdtemp(prefix="cpsysd-cli-", dir="/tmp"))
    path.chmod(0o755)
    shutil.copy(EXAMPLE / "hello.py", path / "hello.py")
    try:
        yield path
    finally:
        shutil.rmtree(path)


def test_init_then_verify_then_generate(app_dir: Path) -> None:
    result = run(
        "init",
        "--name",
        "hello",
        "--entry",
        "hello:Root",
        "--listen",
        "8080",
        "--listen",
        "/run/hello/admin.sock=admin",
        "--no-network",
        "-o",
        "cpsysd.toml",
        cwd=app_dir,
    )
    assert result.returncode == 0, result.stderr
    text = (app_dir / "cpsysd.toml").read_text()
    assert 'listen = ["8080", "/run/hello/admin.sock=admin"]' in text
    assert "network = false" in text
    verified = run("verify", "-c", "cpsysd.toml", cwd=app_dir)
    assert verified.returncode == 0, verified.stderr
    assert "exposure 0.2" in verified.stdout.splitlines()
    generated = run("generate", "-c", "cpsysd.toml", "-o", "units", cwd=app_dir)
    assert generated.returncode == 0, generated.stderr
    assert sorted(p.name for p in (app_dir / "units").iterdir()) == [
        "hello-admin.socket",
        "hello.service",
        "hello.socket",
    ]
    service = (app_dir / "units/hello.service").read_text()
    assert f"WorkingDirectory={app_dir}" in service
    assert f"-m cpsysd serve -c {app_dir}/cpsysd.toml" in service


def test_generate_to_stdout() -> None:
    result = run("generate", "-c", str(EXAMPLE / "cpsysd.toml"), "-o", "-")
    assert result.returncode == 0, result.stderr
    assert "# ---- hello.service ----" in result.stdout
    assert "ListenStream=8080" in result.stdout


def test_example_app_verifies() -> None:
    result = run("verify", "-c", str(EXAMPLE / "cpsysd.toml"))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "exposure 0.2"


def test_init_refuses_a_missing_module(tmp_path: Path) -> None:
    result = run("init", "--name", "x", "--entry", "nosuchmodule:app", cwd=tmp_path)
    assert_one_line_error(result, "entry", "nosuchmodule")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--name", "a/b", "--entry", "hello:Root"], ["name", "a/b"]),
        (["--name", "x", "--entry", "hello:Root", "--listen", "0"], ["listen[0]", "port 0"]),
        (["--name", "x", "--entry", "hello:Root", "--listen", "70000"], ["listen[0]", "70000"]),
        (["--name", "x", "--entry", "hello:Root", "--python", "venv/bin/python"], ["python"]),
        (["--name", "x", "--entry", "hello"], ["entry"]),
        (["--name", "x\ny", "--entry", "hello:Root"], ["name"]),
    ],
)
def test_init_bad_input_writes_nothing(app_dir: Path, args: list[str], words: list[str]) -> None:
    result = run("init", *args, "-o", "cpsysd.toml", cwd=app_dir)
    assert_one_line_error(result, *words)
    assert sorted(p.name for p in app_dir.iterdir()) == ["hello.py"]


@pytest.mark.parametrize(
    ("toml", "field"),
    [
        ('name = "x"\nentry = "hello:Root"\ncolour = "red"\n', "colour"),
        ('name = "x"\n', "entry"),
        ('name = "x"\nentry = "hello:Root"\nlisten = ["0"]\n', "listen[0]"),
        ('name = "x"\nentry = "hello:Root"\nlisten = ["70000"]\n', "listen[0]"),
        ('name = "x"\nentry = "hello:Root"\nenvironment_file = "env"\n', "environment_file"),
        ('name = "x/y"\nentry = "hello:Root"\n', "name"),
        ('name = "x"\nentry = "hello:Root"\ndescription = "a\\nb"\n', "description"),
    ],
)
def test_generate_and_install_bad_description(app_dir: Path, toml: str, field: str) -> None:
    (app_dir / "cpsysd.toml").write_text(toml)
    before = sorted(p.name for p in app_dir.iterdir())
    assert_one_line_error(run("generate", "-c", "cpsysd.toml", "-o", "out", cwd=app_dir), field)
    root = app_dir / "root"
    assert_one_line_error(run("install", "x", "--root", str(root), cwd=app_dir), field)
    assert sorted(p.name for p in app_dir.iterdir()) == before


def test_install_and_uninstall_with_root(app_dir: Path) -> None:
    assert run("init", "--name", "hello", "--entry", "hello:Root", cwd=app_dir).returncode == 0
    root = app_dir / "root"
    first = run("install", "hello", "--root", str(root), cwd=app_dir)
    assert first.returncode == 0, first.stderr
    assert first.stdout.count("wrote ") == 3
    second = run("install", "hello", "--root", str(root), cwd=app_dir)
    assert second.stdout.count("unchanged ") == 3
    assert "wrote" not in second.stdout
    gone = run("uninstall", "hello", "--root", str(root), cwd=app_dir)
    assert gone.returncode == 0, gone.stderr
    assert not root.exists() or list(root.iterdir()) == []


def test_install_name_must_match_description(app_dir: Path) -> None:
    assert run("init", "--name", "hello", "--entry", "hello:Root", cwd=app_dir).returncode == 0
    assert_one_line_error(run("install", "other", "--root", "r", cwd=app_dir), "hello", "other")


def test_debug_shows_the_traceback(tmp_path: Path) -> None:
    result = run("--debug", "verify", "-c", str(tmp_path / "missing.toml"))
    assert result.returncode != 0
    assert "Traceback" in result.stderr


def test_help_lists_the_commands() -> None:
    result = run("--help")
    assert result.returncode == 0
    for command in ("init", "generate", "verify", "install", "uninstall", "serve"):
        assert command in result.stdout
