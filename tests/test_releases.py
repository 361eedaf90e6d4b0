"""Release bookkeeping (cpsysd.host.releases): the lock refuses a second deploy, interrupted
builds are not releases, pruning keeps the live and previous ones, and a build that fails
(a requirement pip cannot install, a disk that fills mid-copy) leaves no release behind and
the live one untouched. Real files, real flock(2), a real pip, a real full tmpfs."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from cpsysd.description.load import AppSpec, parse_spec
from cpsysd.errors import CpsysdError
from cpsysd.host.releases import (
    LiveState,
    build_release,
    deploy_lock,
    list_releases,
    prune,
    read_state,
    write_state,
)


def _fake_release(app_dir: Path, release_id: str, complete: bool = True) -> None:
    (app_dir / release_id / "app").mkdir(parents=True)
    if complete:
        record = {"id": release_id, "created": "2026-12-06T00:00:00+00:00",
                  "source": "/srv/app", "requirements": False}  # fmt: skip
        (app_dir / release_id / "release.json").write_text(json.dumps(record))


def _spec(workdir: Path) -> AppSpec:
    spec = parse_spec({"name": "app", "entry": "app:Root", "python": sys.executable}, str(workdir))
    return dataclasses.replace(spec, working_directory=str(workdir))


def test_a_second_deploy_is_refused_while_one_runs(tmp_path: Path) -> None:
    with (
        deploy_lock(tmp_path, "app"),
        pytest.raises(CpsysdError) as refused,
        deploy_lock(tmp_path, "app"),
    ):
        pass
    assert f"another deploy or rollback of app is running (pid {os.getpid()})" in str(refused.value)
    with deploy_lock(tmp_path, "app"):  # released when the first one ended
        pass


def test_interrupted_builds_are_not_releases_and_pruning_keeps_live_ones(tmp_path: Path) -> None:
    for number in range(1, 8):
        _fake_release(tmp_path, f"r{number}")
    _fake_release(tmp_path, "r8", complete=False)  # a build killed before release.json
    assert [r.id for r in list_releases(tmp_path)] == [f"r{n}" for n in range(1, 8)]
    assert prune(tmp_path, 3, {"r2", "r7"}) == ["r1", "r3", "r4"]
    assert [r.id for r in list_releases(tmp_path)] == ["r2", "r5", "r6", "r7"]


def test_state_round_trips_and_a_broken_one_is_named(tmp_path: Path) -> None:
    assert read_state(tmp_path) == LiveState()
    write_state(tmp_path, LiveState("r3", "r2", 4))
    assert read_state(tmp_path) == LiveState("r3", "r2", 4)
    (tmp_path / "state.json").write_text("[1")
    with pytest.raises(CpsysdError, match=r"state\.json is unreadable"):
        read_state(tmp_path)


def test_a_requirement_that_cannot_be_installed_fails_the_build(tmp_path: Path) -> None:
    workdir = tmp_path / "src"
    workdir.mkdir()
    (workdir / "app.py").write_text("class Root: pass\n")
    (workdir / "requirements.txt").write_text(f"{tmp_path / 'no-such-package'}\n")
    app_dir = tmp_path / "releases" / "app"
    _fake_release(app_dir, "r1")
    with pytest.raises(CpsysdError, match=r"building release r2 failed: .*pip install") as failed:
        build_release(_spec(workdir), app_dir, "r2")
    assert "the live release was not touched" in failed.value.one_line()
    assert sorted(os.listdir(app_dir)) == ["r1"]


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    disk = tmp_path / "disk"
    disk.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(disk)], check=True)
    try:
        yield disk
    finally:
        subprocess.run(["umount", str(disk)], check=True)


def test_a_disk_full_mid_copy_leaves_the_live_release_alone(
    tmp_path: Path, small_disk: Path
) -> None:
    workdir = tmp_path / "src"
    workdir.mkdir()
    (workdir / "app.py").write_text("class Root: pass\n")
    (workdir / "data.bin").write_bytes(os.urandom(1 << 20))  # larger than the disk
    _fake_release(small_disk, "r1")
    live = {p.name: p.stat().st_mtime_ns for p in (small_disk / "r1").iterdir()}
    with pytest.raises(
        CpsysdError, match=r"building release r2 failed: No space left on device \("
    ):
        build_release(_spec(workdir), small_disk, "r2")
    assert sorted(os.listdir(small_disk)) == ["r1"]
    assert {p.name: p.stat().st_mtime_ns for p in (small_disk / "r1").iterdir()} == live
