"""Hostile trees and descriptions: a ``--root DIR`` someone else prepared, planted manifests,
symlinks and FIFOs where cpsysd's files go, descriptions built to exhaust the parser, and an
app whose virtualenv belongs to an unprivileged deploy user.

Every case runs the real CLI in a child process with a time and memory limit, so a regression
fails the test (timeout, MemoryError) instead of hanging or exhausting this machine.
"""

from __future__ import annotations

import hashlib
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from cpsysd.description.bounds import DESCRIPTION_MAX, TEXT_MAX
from cpsysd.description.load import parse_spec
from cpsysd.errors import SpecError
from tests.conftest import run_with_private_unit_dirs

NOBODY = 65534
LIMIT_BYTES = 1 << 30  # a child's address space: a read of /dev/zero or a key bomb hits it


def _limit_memory() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (LIMIT_BYTES, LIMIT_BYTES))


def cpsysd(*args: str | Path, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    """The real CLI, bounded: a hang becomes TimeoutExpired (the child is killed)."""
    return subprocess.run(
        [sys.executable, "-m", "cpsysd", *map(str, args)],
        capture_output=True,
        text=True,
        check=False,
        timeout=timeout,
        preexec_fn=_limit_memory,
    )


def one_error(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode != 0, result.stdout
    assert result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith("cpsysd: error: "), result.stderr
    return result.stderr


@pytest.fixture
def layout(tmp_path: Path) -> tuple[Path, Path, Path]:
    """(DIR for --root, a description, a directory outside DIR holding a victim file)."""
    root, outside = tmp_path / "root", tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    (outside / "victim").write_text("precious\n")
    description = tmp_path / "app.toml"
    description.write_text('name = "app"\nentry = "app:Root"\npython = "/usr/bin/python3"\n')
    return root, description, outside


def install(root: Path, description: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return cpsysd("install", "app", "-c", description, "--root", root, *extra)


# --- --root DIR and manifests ----------------------------------------------------------------


def test_a_planted_journal_climbing_out_with_dotdot_deletes_nothing(layout) -> None:
    root, description, outside = layout
    state = root / "var/lib/cpsysd"
    state.mkdir(parents=True)
    climb = "/etc/systemd/system/../../../../outside/victim"
    journal = {"writes": [], "removes": [climb], "manifest": None}
    (state / "app.manifest.json.pending").write_text(json.dumps(journal))
    error = one_error(install(root, description))
    assert "app.manifest.json.pending names" in error
    assert "not a file cpsysd writes" in error
    assert (outside / "victim").read_text() == "precious\n"
    assert not (root / "etc").exists()  # refused before anything was written


def test_a_planted_manifest_cannot_make_uninstall_delete_a_file_elsewhere(layout) -> None:
    """The digest matches the victim, as an attacker who can read it would make it."""
    root, _, outside = layout
    state = root / "var/lib/cpsysd"
    state.mkdir(parents=True)
    digest = hashlib.sha256((outside / "victim").read_bytes()).hexdigest()
    for live in (str(outside / "victim"), "/var/lib/cpsysd/../../../outside/victim"):
        manifest = {"format": 1, "name": "app", "files": {live: digest}, "enable": []}
        (state / "app.manifest.json").write_text(json.dumps(manifest))
        error = one_error(cpsysd("uninstall", "app", "--root", root))
        assert "app.manifest.json names" in error
        assert (outside / "victim").read_text() == "precious\n"


def test_uninstall_refuses_an_app_name_that_is_a_path(layout) -> None:
    root, _, outside = layout
    error = one_error(cpsysd("uninstall", "../../outside/victim", "--root", root))
    assert "'../../outside/victim'" in error
    assert (outside / "victim").exists()


@pytest.mark.parametrize("kind", ["absolute", "relative"])
def test_a_symlinked_directory_inside_root_keeps_writes_inside(layout, kind: str) -> None:
    """``etc/systemd/system`` pointing outside resolves as if DIR were /, as systemd's own
    --root does: the units land inside DIR, never in the directory the link names."""
    root, description, outside = layout
    (root / "etc/systemd").mkdir(parents=True)
    link = str(outside) if kind == "absolute" else "../../../../outside"
    (root / "etc/systemd/system").symlink_to(link)
    result = install(root, description)
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in outside.iterdir()) == ["victim"]
    inside = root / outside.relative_to("/") if kind == "absolute" else root / "outside"
    assert sorted(p.name for p in inside.iterdir()) == ["app.service", "app.socket"]
    manifest = json.loads((root / "var/lib/cpsysd/app.manifest.json").read_text())
    assert "/etc/systemd/system/app.service" in manifest["files"]


def _special_files(tmp_path: Path) -> dict[str, Path]:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    return {"dev-zero": Path("/dev/zero"), "fifo": fifo}


@pytest.mark.parametrize("kind", ["dev-zero", "fifo"])
def test_a_unit_that_is_a_symlink_to_a_device_or_fifo_is_refused_at_once(
    layout, tmp_path: Path, kind: str
) -> None:
    root, description, _ = layout
    special = _special_files(tmp_path)[kind]
    units = root / "etc/systemd/system"
    units.mkdir(parents=True)
    (units / "app.service").symlink_to(special)
    error = one_error(install(root, description))
    assert f"{units / 'app.service'} exists and was not written by cpsysd" in error
    # --force replaces the link itself; the device or FIFO is never opened
    assert install(root, description, "--force").returncode == 0
    assert not (units / "app.service").is_symlink()
    assert (units / "app.service").read_text().startswith("# ")
    assert special.exists()
    assert not special.is_file()


@pytest.mark.parametrize("kind", ["dev-zero", "fifo"])
def test_a_manifest_that_is_a_symlink_to_a_device_or_fifo_is_refused_at_once(
    layout, tmp_path: Path, kind: str
) -> None:
    root, description, _ = layout
    state = root / "var/lib/cpsysd"
    state.mkdir(parents=True)
    (state / "app.manifest.json").symlink_to(_special_files(tmp_path)[kind])
    error = one_error(install(root, description))
    assert "app.manifest.json is a symlink, not a file" in error


# --- descriptions built to exhaust the parser or systemd ----------------------------------------


@pytest.mark.parametrize("size", [40_000, 80_000])
def test_a_dotted_key_bomb_is_refused_before_tomllib_runs(tmp_path: Path, size: int) -> None:
    """Unbounded, tomllib takes 4 s and 1.5 GB for 40 KB, 6.3 GB for 80 KB (more than the
    child's 1 GiB: it would die of MemoryError)."""
    description = tmp_path / "cpsysd.toml"
    bomb = "a" + ".a" * (size // 2) + " = 1\n"
    description.write_text(f'name = "app"\nentry = "app:Root"\n{bomb}')
    error = one_error(cpsysd("generate", "-c", description, "-o", tmp_path / "out", timeout=10))
    assert "line 3 has a key of more than 64 dotted parts" in error


@pytest.mark.parametrize("kind", ["dev-zero", "fifo", "huge"])
def test_a_description_that_is_not_a_small_regular_file_is_refused(
    tmp_path: Path, kind: str
) -> None:
    description = tmp_path / "cpsysd.toml"
    if kind == "huge":
        description.write_text(f'name = "app"\nentry = "app:Root"\n# {"x" * DESCRIPTION_MAX}\n')
    else:
        description.symlink_to(_special_files(tmp_path)[kind])
    error = one_error(cpsysd("generate", "-c", description, "-o", tmp_path / "out", timeout=10))
    assert "is larger than 256 KiB" in error or "is not a regular file" in error


@pytest.mark.parametrize("field", ["description", "environment"])
def test_ten_megabytes_of_free_text_are_refused_naming_the_field(field: str) -> None:
    text = "x" * 10_000_000
    value: object = {"BIG": text} if field == "environment" else text
    with pytest.raises(SpecError) as caught:
        parse_spec({"name": "app", "entry": "app:Root", field: value}, "/srv/app")
    named = "environment.BIG" if field == "environment" else field
    assert caught.value.one_line() == (
        f"{named}: is 10000000 bytes long, more than the {TEXT_MAX} bytes cpsysd allows "
        f"(shorten it to at most {TEXT_MAX} bytes)"
    )
    parse_spec({"name": "app", "entry": "app:Root", field: value.__class__()}, "/srv/app")


# --- nothing of the app runs as root at install ---------------------------------------------------


@pytest.fixture
def deploy_venv() -> Iterator[tuple[Path, Path]]:
    """(a virtualenv owned by nobody whose .pth file records who ran it, the marker file)."""
    base = Path(tempfile.mkdtemp(prefix="cpsysd-hostile-", dir="/tmp"))
    base.chmod(0o755)
    try:
        venv, marks = base / "venv", base / "marks"
        marks.mkdir()
        marker = marks / "marker"
        subprocess.run(["/usr/bin/python3", "-m", "venv", "--without-pip", venv], check=True)
        (site,) = venv.glob("lib/python3*/site-packages")
        (site / "evil.pth").write_text(
            f"import os; open({str(marker)!r}, 'a').write(f'uid={{os.getuid()}}\\n')\n"
        )
        app = base / "app"
        app.mkdir()
        (app / "app.py").write_text("class Root: pass\n")
        subprocess.run(["chown", "-R", f"{NOBODY}:{NOBODY}", venv, app, marks], check=True)
        # the .pth runs for whoever starts the venv's interpreter: prove it does for nobody
        probe = ["runuser", "-u", "nobody", "--", str(venv / "bin/python"), "-c", "pass"]
        subprocess.run(probe, check=True)
        assert set(marker.read_text().splitlines()) == {f"uid={NOBODY}"}  # lib and lib64
        marker.unlink()
        yield venv, marker
    finally:
        shutil.rmtree(base)


def test_install_refuses_a_venv_the_deploy_user_owns_and_runs_nothing_as_root(
    deploy_venv: tuple[Path, Path],
) -> None:
    """The real ``cpsysd install`` as root, in a mount namespace of its own with tmpfs over
    the unit and state directories (as tests/test_reach.py does)."""
    venv, marker = deploy_venv
    app = venv.parent / "app"
    description = venv.parent / "hostiletree.toml"
    description.write_text(
        f'name = "hostiletree"\nentry = "app:Root"\npython = "{venv}/bin/python"\n'
        f'working_directory = "{app}"\n'
    )
    argv = [sys.executable, "-m", "cpsysd", "install", "hostiletree", "-c", str(description)]
    result = run_with_private_unit_dirs(argv)
    assert not marker.exists(), f"the venv's .pth ran: {marker.read_text()}"
    assert result.stdout == "rc=1\n"  # and nothing written
    assert result.stderr.count("\n") == 1, result.stderr
    assert f"is owned by uid {NOBODY}, and install runs the app's interpreter as root" in (
        result.stderr
    )
    assert "chown, chmod go-w" in result.stderr


def test_byte_compiling_runs_no_pth_file_of_the_venv(deploy_venv: tuple[Path, Path]) -> None:
    """The second guard: even past the ownership check (a root-owned venv may carry a .pth
    too), compileall runs isolated from site, and still compiles."""
    from cpsysd.host.install import InstallReport, _precompile

    venv, marker = deploy_venv
    app = venv.parent / "app"
    report = InstallReport()
    spec = parse_spec(
        {"name": "app", "entry": "app:Root", "python": str(venv / "bin/python")}, str(app)
    )
    _precompile(spec, report)
    assert report.notes == []
    assert not marker.exists(), f"the venv's .pth ran: {marker.read_text()}"
    (cache,) = (app / "__pycache__").iterdir()
    assert cache.name.startswith("app.")


@pytest.mark.parametrize(
    "renewal",
    ["renew_days = 30", 'acme = "https://127.0.0.1:14000/dir"'],
)
def test_a_renewal_job_refuses_a_venv_even_its_own_service_user_owns(
    deploy_venv: tuple[Path, Path], renewal: str
) -> None:
    """``user = "nobody"`` may own its venv for the service itself, but NAME-cert-renew.service
    runs that venv's interpreter as root (site, .pth files and all): the real ``cpsysd install``
    refuses it in one line naming the venv and the fix, before anything runs or is written."""
    venv, marker = deploy_venv
    app = venv.parent / "app"
    description = venv.parent / "hostilerenew.toml"
    description.write_text(
        f'name = "hostilerenew"\nentry = "app:Root"\npython = "{venv}/bin/python"\n'
        f'working_directory = "{app}"\nuser = "nobody"\n'
        'listen = ["127.0.0.1:8080", "127.0.0.1:8443=https"]\n'
        f'[tls]\ncert = "{venv.parent}/tls/cert.pem"\nkey = "{venv.parent}/tls/key.pem"\n'
        f'hosts = ["app.example"]\n{renewal}\n'
    )  # the key files are in the fixture's directory: even a wrong order writes nothing else
    argv = [sys.executable, "-m", "cpsysd", "install", "hostilerenew", "-c", str(description)]
    result = run_with_private_unit_dirs(argv)
    assert not marker.exists(), f"the venv's .pth ran: {marker.read_text()}"
    assert result.stdout == "rc=1\n"  # and nothing written
    assert result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith(f"cpsysd: error: {venv} is owned by uid {NOBODY}, and ")
    assert "hostilerenew-cert-renew.service runs the app's interpreter as root" in result.stderr
    assert f"chown -R root:root {venv}" in result.stderr
    assert "or drop [tls] renew_days and acme" in result.stderr
