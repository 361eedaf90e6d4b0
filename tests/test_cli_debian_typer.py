"""Every command's options build under bookworm's python3-typer 0.7 (the .deb's), which knows
``Optional[X]`` but not ``X | None``: a wrong annotation fails only in the package build."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def _debian_typer() -> bool:
    probe = subprocess.run(
        ["/usr/bin/python3", "-c", "import typer, click"], capture_output=True, check=False
    )
    return probe.returncode == 0


@pytest.mark.skipif(
    not Path("/usr/bin/python3").exists() or not _debian_typer(),
    reason="no Debian python3-typer",
)
def test_every_command_builds_under_debian_typer(tmp_path: Path) -> None:
    script = (
        "import typer.main\n"
        "from cpsysd.cli import app\n"
        "app._register()\n"
        "group = typer.main.get_command(app.app)\n"
        "print(len(group.commands))\n"
    )
    result = subprocess.run(
        ["/usr/bin/python3", "-c", script],
        env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin", "PYTHONNOUSERSITE": "1"},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert int(result.stdout) >= 15  # every command, not an empty group
