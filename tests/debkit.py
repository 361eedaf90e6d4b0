"""Build cpsysd's and the example app's .deb files once per test session (shared by
tests/test_debian_package.py and tests/e2e/test_debian_packages.py).

The build is packaging/build-debs.sh --worktree: the working tree's files (what every other test
tests), copied into a clean directory and built with Debian's own toolchain and python3.
CPSYSD_TEST_DEBS=DIR tests the .deb files already in DIR instead (e.g. `just deb`'s dist/).
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
BUILD = REPO / "packaging" / "build-debs.sh"
_built: dict[str, Debs] = {}


@dataclass(frozen=True)
class Debs:
    """The two packages: ``cpsysd`` and ``app`` (cpsysd-hello)."""

    cpsysd: Path
    app: Path


def build_debs(factory: pytest.TempPathFactory) -> Debs:
    """The session's .deb files, built on first use (about 10 s)."""
    if "debs" not in _built:
        prebuilt = os.environ.get("CPSYSD_TEST_DEBS")
        out = Path(prebuilt) if prebuilt else factory.mktemp("debs")
        if not prebuilt:
            result = subprocess.run(
                [str(BUILD), "--worktree", str(out)], capture_output=True, text=True, timeout=600
            )
            if result.returncode != 0:
                pytest.fail(f"build-debs.sh failed:\n{result.stdout}{result.stderr}")
        [cpsysd] = out.glob("cpsysd_*_all.deb")
        [app] = out.glob("cpsysd-hello_*_all.deb")
        _built["debs"] = Debs(cpsysd, app)
    return _built["debs"]
