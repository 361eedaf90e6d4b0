"""``cpsysd try --deploy`` and ``--show-idle`` as a user runs them: a deploy of the next
version under load, and the idle stop, each shown by try in its container (issues 17 and 20)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from e2etools import EXAMPLE, REPO, run_try

pytestmark = pytest.mark.e2e


def _example_copy(base: Path, name: str, extra: str = "", greeting: str = "Hello") -> Path:
    """The example app in ``base/name`` (open to the DynamicUser), greeting with ``greeting``,
    its description with ``extra`` lines appended."""
    app = base / name
    shutil.copytree(EXAMPLE, app, ignore=shutil.ignore_patterns("__pycache__"))
    base.chmod(0o755)
    app.chmod(0o755)
    conf = app / "app.conf"
    conf.write_text(conf.read_text().replace('greeting = "Hello"', f'greeting = "{greeting}"'))
    description = app / "cpsysd.toml"
    description.write_text(description.read_text() + extra)
    return description


def test_try_shows_a_deploy_under_load(
    container_allowed: None, tmp_path: Path, figure: Callable[[str, str], None]
) -> None:
    description = _example_copy(tmp_path, "v1", 'health_path = "/health"\n')
    second = _example_copy(tmp_path, "v2", greeting="Release-2").parent
    result = run_try(description, "--deploy", str(second))
    assert result.returncode == 0
    out = result.stdout
    assert "first request: HTTP 200 from http://127.0.0.1:8080/" in out
    assert "release 1        release r1 is live (replaced hello.service)" in out
    assert "release 2        release r2 is live (replaced hello-release@r1.service)" in out
    requests = re.search(r"requests +([0-9]+) ok, ([0-9]+) failed", out)
    assert requests
    assert int(requests.group(1)) > 0
    assert requests.group(2) == "0"
    assert re.search(r"answers before +Hello from cpsysd!", out)
    assert re.search(r"answers after +Release-2 from cpsysd!", out)
    assert "Hello" not in out.split("answers after")[1].splitlines()[0]
    assert "answers changed  yes" in out
    assert "nothing left behind" in out
    figure(
        "cpsysd try --deploy: requests during release 1 -> 2", f"{requests.group(1)} ok, 0 failed"
    )


def test_try_shows_the_idle_stop(
    container_allowed: None, tmp_path: Path, figure: Callable[[str, str], None]
) -> None:
    description = _example_copy(tmp_path, "app", "idle_stop_sec = 2\n")
    result = run_try(description, "--show-idle")
    assert result.returncode == 0
    out = result.stdout
    assert re.search(r"idle stop +hello\.service exited [0-9.]+ s after the last request; "
                     r"restarts 0", out)  # fmt: skip
    memory = re.search(r"memory +([0-9.]+) MiB while running \(VmRSS\), no process once idle", out)
    assert memory
    assert float(memory.group(1)) > 0
    wait = re.search(r"after idle +([0-9]+) ms to the first answer, HTTP 200", out)
    assert wait
    assert "nothing left behind" in out
    figure("cpsysd try --show-idle: memory running -> idle", f"{memory.group(1)} MiB -> 0")
    figure("cpsysd try --show-idle: first request after idle", f"{wait.group(1)} ms")


def test_show_idle_without_idle_stop_sec_is_one_line_before_any_container(
    tmp_path: Path,
) -> None:
    description = _example_copy(tmp_path, "app")
    result = subprocess.run(
        [sys.executable, "-m", "cpsysd", "try", "-c", str(description), "--show-idle"],
        capture_output=True, text=True, timeout=120, cwd=REPO, check=False,
    )  # fmt: skip
    assert result.returncode == 2
    assert result.stdout == ""  # nothing booted
    assert result.stderr.count("\n") == 1, result.stderr
    assert "idle_stop_sec: is not set, so --show-idle has no idle stop to show" in result.stderr
