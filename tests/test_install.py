"""install/uninstall against a temporary --root: idempotent, ownership-aware, atomic."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from cpsysd.description.load import parse_spec
from cpsysd.errors import InstallError
from cpsysd.host.install import (
    InstallReport,
    InstallTarget,
    _precompile,
    install,
    read_manifest,
    uninstall,
)
from cpsysd.render.common import MARKER


def spec_of(**fields: object):
    base = {"name": "app", "entry": "app:Root", "python": "/usr/bin/python3"}
    return parse_spec({**base, **fields}, "/srv/app")


def tree(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def test_install_writes_units_description_and_manifest(tmp_path: Path) -> None:
    report = install(spec_of(), InstallTarget(root=tmp_path))
    files = tree(tmp_path)
    assert set(files) == {
        "etc/systemd/system/app.service",
        "etc/systemd/system/app.socket",
        "var/lib/cpsysd/app.toml",
        "var/lib/cpsysd/app.manifest.json",
    }
    assert len(report.written) == 3
    assert b"-c /var/lib/cpsysd/app.toml" in files["etc/systemd/system/app.service"]
    manifest = json.loads(files["var/lib/cpsysd/app.manifest.json"])
    assert sorted(manifest["files"]) == [
        "/etc/systemd/system/app.service",
        "/etc/systemd/system/app.socket",
        "/var/lib/cpsysd/app.toml",
    ]
    assert manifest["enable"] == ["app.socket"]
    assert oct((tmp_path / "etc/systemd/system/app.service").stat().st_mode & 0o777) == "0o644"


def test_install_twice_changes_nothing(tmp_path: Path) -> None:
    install(spec_of(), InstallTarget(root=tmp_path))
    before = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*") if p.is_file()}
    report = install(spec_of(), InstallTarget(root=tmp_path))
    assert report.written == []
    assert len(report.unchanged) == 3
    assert {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*") if p.is_file()} == before


def test_vendor_and_user_directories(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    install(spec_of(), InstallTarget(root=tmp_path, vendor=True))
    assert (tmp_path / "lib/systemd/system/app.service").exists()
    monkeypatch.setenv("HOME", "/home/alice")
    monkeypatch.delenv("XDG_CONFIG_HOME", raising=False)
    monkeypatch.delenv("XDG_STATE_HOME", raising=False)
    user_root = tmp_path / "u"
    install(spec_of(), InstallTarget(root=user_root, user=True))
    unit = user_root / "home/alice/.config/systemd/user/app.service"
    assert "DynamicUser" not in unit.read_text()
    assert "-c /home/alice/.local/state/cpsysd/app.toml" in unit.read_text()


def test_uninstall_leaves_nothing_behind(tmp_path: Path) -> None:
    install(spec_of(listen=["80", "/run/app.sock=admin"]), InstallTarget(root=tmp_path))
    report = uninstall("app", InstallTarget(root=tmp_path))
    assert len(report.removed) == 4
    assert list(tmp_path.iterdir()) == []


def test_uninstall_of_unknown_app(tmp_path: Path) -> None:
    with pytest.raises(InstallError, match="not installed"):
        uninstall("nope", InstallTarget(root=tmp_path))


def test_foreign_unit_is_not_overwritten_without_force(tmp_path: Path) -> None:
    unit_dir = tmp_path / "etc/systemd/system"
    unit_dir.mkdir(parents=True)
    (unit_dir / "app.socket").write_text("[Socket]\nListenStream=9999\n")
    with pytest.raises(InstallError, match="not written by cpsysd"):
        install(spec_of(), InstallTarget(root=tmp_path))
    assert tree(tmp_path) == {"etc/systemd/system/app.socket": b"[Socket]\nListenStream=9999\n"}
    install(spec_of(), InstallTarget(root=tmp_path, force=True))
    assert MARKER in (unit_dir / "app.socket").read_text()


def test_drop_ins_are_left_alone(tmp_path: Path) -> None:
    install(spec_of(), InstallTarget(root=tmp_path))
    dropin = tmp_path / "etc/systemd/system/app.service.d/local.conf"
    dropin.parent.mkdir()
    dropin.write_text("[Service]\nEnvironment=X=1\n")
    install(spec_of(description="changed"), InstallTarget(root=tmp_path))
    uninstall("app", InstallTarget(root=tmp_path))
    assert dropin.read_text() == "[Service]\nEnvironment=X=1\n"


def test_a_dropped_socket_is_removed_on_reinstall(tmp_path: Path) -> None:
    install(spec_of(listen=["80", "81=admin"]), InstallTarget(root=tmp_path))
    assert (tmp_path / "etc/systemd/system/app-admin.socket").exists()
    report = install(spec_of(listen=["80"]), InstallTarget(root=tmp_path))
    assert report.removed == [str(tmp_path / "etc/systemd/system/app-admin.socket")]
    assert not (tmp_path / "etc/systemd/system/app-admin.socket").exists()
    manifest = read_manifest("app", InstallTarget(root=tmp_path))
    assert manifest is not None
    assert "/etc/systemd/system/app-admin.socket" not in manifest["files"]


KILLER = r"""
import os, sys
from cpsysd import fsutil
from cpsysd.host.install import InstallTarget, install
from cpsysd.description.load import parse_spec
renames = int(sys.argv[2])
real = os.replace
def dying_replace(src, dst):
    global renames
    if renames == 0:
        os.kill(os.getpid(), 9)
    renames -= 1
    real(src, dst)
fsutil.os.replace = dying_replace
spec = parse_spec({"name": "app", "entry": "app:Root", "python": "/usr/bin/python3",
                   "description": sys.argv[3], "listen": ["80", "81=admin"]}, "/srv/app")
install(spec, InstallTarget(root=__import__("pathlib").Path(sys.argv[1])))
"""


@pytest.mark.parametrize("renames_before_kill", range(7))
def test_killed_install_is_completed_by_the_next_run(
    tmp_path: Path, renames_before_kill: int
) -> None:
    """SIGKILL at every rename of an upgrade: each file is old or new, never torn, and the next
    install or uninstall finds a consistent state (roll forward from the journal)."""
    old_spec = spec_of(description="old", listen=["80", "81=admin"])
    install(old_spec, InstallTarget(root=tmp_path))
    old = tree(tmp_path)
    install(
        spec_of(description="new", listen=["80", "81=admin"]), InstallTarget(root=tmp_path / "n")
    )
    new = {k: v for k, v in tree(tmp_path / "n").items()}
    subprocess.run(["rm", "-r", str(tmp_path / "n")], check=True)
    killed = subprocess.run(
        [sys.executable, "-c", KILLER, str(tmp_path), str(renames_before_kill), "new"], check=False
    )
    assert killed.returncode in (-signal.SIGKILL, 0)
    for name, data in tree(tmp_path).items():
        if name.startswith("var/lib/cpsysd/app.manifest.json") or "cpsysd-tmp" in name:
            continue
        assert data in (old.get(name), new.get(name)), f"{name} is neither old nor new"
    # The next run completes (or discards) the interrupted transaction.
    manifest = read_manifest("app", InstallTarget(root=tmp_path))
    assert manifest is not None
    files = {k: v for k, v in tree(tmp_path).items() if "cpsysd-tmp" not in k}
    state = "new" if files == new else "old"
    assert files == (new if state == "new" else old), "a mix of old and new after recovery"
    install(spec_of(description="new", listen=["80", "81=admin"]), InstallTarget(root=tmp_path))
    assert tree(tmp_path) == new
    print(f"killed after {renames_before_kill} renames -> recovered to {state}")


def test_state_directory_is_not_world_writable(tmp_path: Path) -> None:
    old = os.umask(0o002)
    try:
        install(spec_of(), InstallTarget(root=tmp_path))
    finally:
        os.umask(old)
    for path in tmp_path.rglob("*"):
        if path.is_file():
            assert path.stat().st_mode & 0o022 == 0, path


def test_what_it_creates_is_readable_by_the_service_whatever_the_umask(tmp_path: Path) -> None:
    """Hardened hosts give root umask 027 or 077: a /var/lib/cpsysd made 0750 would hide the
    description from the service's DynamicUser (cpsysd serve -c /var/lib/cpsysd/NAME.toml)."""
    old = os.umask(0o077)
    try:
        install(spec_of(), InstallTarget(root=tmp_path))
    finally:
        os.umask(old)
    made = [p for p in tmp_path.rglob("*")]
    assert tmp_path / "var" / "lib" / "cpsysd" / "app.toml" in made
    for path in made:
        expected = 0o755 if path.is_dir() else 0o644
        assert path.stat().st_mode & 0o777 == expected, path


def test_byte_code_caches_are_readable_by_the_service_whatever_the_umask(tmp_path: Path) -> None:
    app = tmp_path / "app"
    app.mkdir()
    (app / "app.py").write_text("class Root: pass\n")
    (app / "app.py").chmod(0o644)
    report = InstallReport()
    old = os.umask(0o077)
    try:
        _precompile(
            parse_spec({"name": "app", "entry": "app:Root", "python": sys.executable}, str(app)),
            report,
        )
    finally:
        os.umask(old)
    assert report.notes == []
    (cache,) = (app / "__pycache__").iterdir()
    assert (app / "__pycache__").stat().st_mode & 0o777 == 0o755
    assert cache.stat().st_mode & 0o777 == 0o644
