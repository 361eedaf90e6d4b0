"""cpsysd.host.reach: which of its own paths a system service could not use, judged from real
modes."""

from __future__ import annotations

import errno
import os
import shutil
import struct
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from cpsysd.description.load import AppSpec, parse_spec
from cpsysd.errors import InstallError
from cpsysd.host.reach import check_reachable, unreachable, writable_by_others
from tests.conftest import run_with_private_unit_dirs

NOBODY = 65534  # nobody:nogroup on Debian


@pytest.fixture
def base() -> Iterator[Path]:
    """A scratch directory every user can enter (pytest's own tmp_path is 0700)."""
    path = Path(tempfile.mkdtemp(prefix="cpsysd-reach-", dir="/tmp"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path)


def app_dir(base: Path, mode: int = 0o755) -> Path:
    app = base / "app"
    app.mkdir()
    (app / "app.py").write_text("class Root: pass\n")
    app.chmod(mode)
    return app


def spec_for(app: Path, **fields: object) -> AppSpec:
    return parse_spec(
        {"name": "app", "entry": "app:Root", "python": "/usr/bin/python3", **fields}, str(app)
    )


def test_a_readable_app_passes(base: Path) -> None:
    assert unreachable(spec_for(app_dir(base))) == []


def test_a_private_working_directory_is_named_with_its_mode(base: Path) -> None:
    app = app_dir(base, 0o700)
    assert unreachable(spec_for(app)) == [
        f"the service's DynamicUser cannot use the working directory {app} "
        f"(mode rwx------, owner uid {os.getuid()})"
    ]


def test_a_directory_on_the_way_must_be_enterable(base: Path) -> None:
    app = app_dir(base)
    base.chmod(0o711)  # enter, but not list: enough
    assert unreachable(spec_for(app)) == []
    base.chmod(0o750)
    (problem,) = unreachable(spec_for(app))
    assert problem.startswith(f"the service's DynamicUser cannot enter {base} (mode rwxr-x---")
    assert problem.endswith(f"so it cannot use the working directory {app}")


def test_the_interpreter_is_followed_through_its_symlink(base: Path) -> None:
    """A virtualenv's python is a symlink: the directories of its target count too."""
    app = app_dir(base)
    hidden = base / "private"
    hidden.mkdir(mode=0o700)
    shutil.copy("/usr/bin/true", hidden / "python3")
    venv_bin = base / "venv" / "bin"
    venv_bin.mkdir(parents=True)
    (venv_bin / "python").symlink_to(hidden / "python3")
    (problem,) = unreachable(spec_for(app, python=str(venv_bin / "python")))
    assert problem.startswith(f"the service's DynamicUser cannot enter {hidden} ")
    assert problem.endswith(f"so it cannot run the interpreter {venv_bin / 'python'}")


def test_a_private_config_file(base: Path) -> None:
    app = app_dir(base)
    (app / "app.conf").write_text("[global]\n")
    (app / "app.conf").chmod(0o600)
    (problem,) = unreachable(spec_for(app, config="app.conf"))
    assert problem.startswith(f"the service's DynamicUser cannot read the CherryPy config {app}/")


def test_home_is_hidden_whatever_its_modes() -> None:
    spec = parse_spec(
        {"name": "app", "entry": "app:Root", "python": "/usr/bin/python3"}, "/root/app"
    )
    (problem,) = unreachable(spec)
    assert problem == (
        "/root is hidden from system services (ProtectHome=yes), "
        "so the service cannot use the working directory /root/app"
    )
    with pytest.raises(InstallError) as caught:
        check_reachable(spec)
    assert "move the app and its virtualenv out of it (e.g. to /srv/app)" in caught.value.one_line()


def test_a_named_user_gets_owner_and_group_bits(base: Path) -> None:
    app = app_dir(base, 0o700)
    os.chown(app, NOBODY, 0)
    assert unreachable(spec_for(app, user="nobody")) == []  # the owner's bits
    os.chown(app, 0, NOBODY)
    app.chmod(0o750)
    assert unreachable(spec_for(app, user="nobody")) == []  # nogroup is nobody's group
    os.chown(app, 0, 0)
    (problem,) = unreachable(spec_for(app, user="nobody"))
    assert problem.startswith(f"the service's user nobody cannot use the working directory {app}")
    with pytest.raises(InstallError) as caught:
        check_reachable(spec_for(app, user="nobody"))
    assert "give nobody access (chmod, chgrp)" in caught.value.one_line()


def test_paths_that_cannot_be_judged_pass(base: Path) -> None:
    app = app_dir(base, 0o700)
    assert unreachable(spec_for(app, user="no-such-user-yet")) == []
    assert unreachable(spec_for(base / "not-unpacked-yet")) == []


def _grant_others_by_acl(path: Path) -> None:
    """A POSIX ACL (the kernel's xattr layout, as setfacl writes it) with a named-user entry."""
    entries = [(0x01, 7, 0xFFFFFFFF), (0x02, 5, 1234), (0x04, 0, 0xFFFFFFFF)]
    entries += [(0x10, 5, 0xFFFFFFFF), (0x20, 0, 0xFFFFFFFF)]
    blob = struct.pack("<I", 2) + b"".join(struct.pack("<HHI", *entry) for entry in entries)
    try:
        os.setxattr(path, "system.posix_acl_access", blob)
    except OSError as err:
        if err.errno in (errno.ENOTSUP, errno.EOPNOTSUPP):
            pytest.skip(f"{path.parent} does not support POSIX ACLs")
        raise


def test_a_path_with_an_acl_is_not_judged(base: Path) -> None:
    app = app_dir(base, 0o700)
    _grant_others_by_acl(app)
    assert unreachable(spec_for(app)) == []


def test_install_refuses_before_writing(base: Path) -> None:
    """Through the CLI, as a user runs it: one line, nothing written. It runs in a mount
    namespace of its own with empty tmpfs over the unit and state directories, so even a broken
    check could not write to this machine's /etc/systemd/system."""
    app = app_dir(base, 0o700)
    description = base / "reachtest.toml"
    description.write_text(
        f'name = "reachtest"\nentry = "app:Root"\npython = "/usr/bin/python3"\n'
        f'working_directory = "{app}"\n'
    )
    install = [sys.executable, "-m", "cpsysd", "install", "reachtest", "-c", str(description)]
    result = run_with_private_unit_dirs(install)
    assert result.stdout == "rc=1\n"  # and nothing found in either directory
    assert result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith(
        f"cpsysd: error: the service's DynamicUser cannot use the working directory {app} "
    )
    assert "chmod o+rx" in result.stderr


def test_app_paths_others_could_change_are_named(base: Path) -> None:
    """install runs the interpreter as root: its tree must belong to root or the service's
    own user. A root-owned sticky directory (/tmp, and here base) is no way in."""
    app = app_dir(base)
    base.chmod(0o1777)
    assert writable_by_others(spec_for(app)) == []
    os.chown(app, 0, NOBODY)
    app.chmod(0o775)
    assert writable_by_others(spec_for(app)) == [
        f"{app} is writable by group {NOBODY} (mode rwxrwxr-x), "
        "and install runs the app's interpreter as root"
    ]
    assert writable_by_others(spec_for(app, user="nobody")) == []  # its own primary group
    app.chmod(0o755)
    os.chown(app, NOBODY, NOBODY)
    assert writable_by_others(spec_for(app, user="nobody")) == []  # its own app
    (problem,) = writable_by_others(spec_for(app))
    assert problem.startswith(f"{app} is owned by uid {NOBODY}, ")
    with pytest.raises(InstallError) as caught:
        check_reachable(spec_for(app))
    assert "make it owned by root and not writable by group or others" in caught.value.one_line()
