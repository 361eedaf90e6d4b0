"""cpsysd.fsutil: directories with exact modes whatever the umask, and what a killed run
leaves."""

from __future__ import annotations

import os
import stat
from pathlib import Path, PurePosixPath

import pytest

from cpsysd import fsutil
from cpsysd.errors import CpsysdError


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


def test_directories_resolve_inside_root_whatever_their_links_say(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "usr/lib").mkdir(parents=True)
    (root / "lib").symlink_to("usr/lib")  # a merged-/usr image
    (root / "up").symlink_to("../../../..")
    (root / "abs").symlink_to("/usr")
    (root / "file").symlink_to("/etc/passwd")
    live = PurePosixPath
    assert fsutil.resolve_in_root(root, live("/lib/systemd/x")) == root / "usr/lib/systemd/x"
    assert fsutil.resolve_in_root(root, live("/up/etc/x")) == root / "etc/x"
    assert fsutil.resolve_in_root(root, live("/abs/lib/x")) == root / "usr/lib/x"
    assert fsutil.resolve_in_root(root, live("/file")) == root / "file"  # the last: not followed
    assert fsutil.resolve_in_root(root, live("/../../x")) == root / "x"


def test_a_symlink_loop_and_a_dotdot_below_a_missing_directory_are_refused(
    tmp_path: Path,
) -> None:
    (tmp_path / "loop").symlink_to("loop")
    with pytest.raises(CpsysdError, match="too many symlinks"):
        fsutil.resolve_in_root(tmp_path, PurePosixPath("/loop/x"))
    with pytest.raises(CpsysdError, match="climbs out"):
        fsutil.resolve_in_root(tmp_path, PurePosixPath("/missing/../../../x"))


def test_only_small_regular_files_are_read(tmp_path: Path) -> None:
    (tmp_path / "small").write_bytes(b"12345")
    assert fsutil.read_regular_file(tmp_path / "small", 5) == b"12345"
    with pytest.raises(CpsysdError, match="larger than 4 bytes"):
        fsutil.read_regular_file(tmp_path / "small", 4)
    (tmp_path / "link").symlink_to("small")
    with pytest.raises(CpsysdError, match="is a symlink, not a file"):
        fsutil.read_regular_file(tmp_path / "link", 5)
    os.mkfifo(tmp_path / "fifo")
    with pytest.raises(CpsysdError, match="is not a regular file"):
        fsutil.read_regular_file(tmp_path / "fifo", 5)
    with pytest.raises(FileNotFoundError):
        fsutil.read_regular_file(tmp_path / "missing", 5)
