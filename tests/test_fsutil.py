"""cpsysd.host.fsutil: directories with exact modes whatever the umask, and what a killed run
leaves."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from cpsysd.host import fsutil


def test_directories_get_their_modes_whatever_the_umask(tmp_path: Path) -> None:
    target = tmp_path / "a" / "b" / "keys"
    old = os.umask(0o077)
    try:
        made = fsutil.make_directories(target, 0o700)
    finally:
        os.umask(old)
    assert made == [tmp_path / "a", tmp_path / "a" / "b", target]
    modes = [path.stat().st_mode & 0o777 for path in made]
    assert modes == [0o755, 0o755, 0o700]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a"]  # no staging name left


def test_a_killed_runs_staging_directory_is_replaced(tmp_path: Path) -> None:
    """Killed between mkdir and rename, a run leaves an empty hidden directory, never the real
    one with the umask's narrower mode; the next run takes its name over."""
    stale = tmp_path / ".state.cpsysd-tmp"
    stale.mkdir(mode=0o700)
    fsutil.make_directories(tmp_path / "state")
    assert (tmp_path / "state").stat().st_mode & 0o777 == 0o755
    assert not stale.exists()


def test_an_existing_directory_is_left_as_it_is(tmp_path: Path) -> None:
    (tmp_path / "mine").mkdir(mode=0o750)
    (tmp_path / "mine").chmod(0o750)
    assert fsutil.make_directories(tmp_path / "mine" / "sub") == [tmp_path / "mine" / "sub"]
    assert (tmp_path / "mine").stat().st_mode & 0o777 == 0o750


@pytest.mark.parametrize("umask", [0o000, 0o077])
def test_unique_staging_has_its_mode_and_the_writers_pid(tmp_path: Path, umask: int) -> None:
    """What key files need: mode exact whatever the umask, a name carrying the PID, and link(2)
    publishing that refuses a file that appeared meanwhile."""
    target = tmp_path / "k.pem"
    old = os.umask(umask)
    try:
        temp = fsutil.stage_unique(target, b"secret", 0o600)
        public = fsutil.stage_unique(tmp_path / "c.pem", b"cert", 0o644)
    finally:
        os.umask(old)
    assert temp.name.startswith(f".k.pem.{os.getpid()}-")
    assert temp.name.endswith(".tmp")
    assert (stat.S_IMODE(temp.stat().st_mode), stat.S_IMODE(public.stat().st_mode)) == (
        0o600,
        0o644,
    )
    target.write_bytes(b"someone else's")
    with pytest.raises(FileExistsError):
        fsutil.publish(temp, target, replace=False)
    assert target.read_bytes() == b"someone else's"
    fsutil.publish(temp, target, replace=True)
    assert (target.read_bytes(), temp.exists()) == (b"secret", False)
    again = fsutil.stage_unique(target, b"next", 0o600)
    assert fsutil.sweep_stale_staging(target) == []  # its writer (this process) still runs
    assert again.exists()
