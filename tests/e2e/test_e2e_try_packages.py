"""``cpsysd try`` runs the app with its own interpreter's packages, as ``cpsysd install`` would:
an app whose entry imports a package that only its virtualenv has (not one of cpsysd's run-time
dependencies) answers its first request under the real systemd; an interpreter that is missing
or of another Python version is one line saying what to fix."""

from __future__ import annotations

import base64
import glob
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import textwrap
import zipfile
from collections.abc import Iterator
from importlib.util import find_spec
from pathlib import Path

import pytest
from e2etools import SYSTEM_PYTHON, run_try

from cpsysd.harness.provision import _key, runtime_distributions

pytestmark = pytest.mark.e2e

PACKAGE = "greetkit"  # not a real project: it exists only in the test's virtualenv
OFFLINE = {**os.environ, "PIP_CONFIG_FILE": os.devnull, "PIP_NO_INDEX": "1"}

GREETKIT = """
def greeting():
    return f"hello from greetkit at {__file__}"
"""

APP = """
import greetkit


def application(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [greetkit.greeting().encode()]
"""


def _wheel(base: Path) -> Path:
    """A pure-Python wheel of ``greetkit`` 1.2.3, written by hand (a wheel is a zip archive with
    a dist-info directory, PEP 427): no build backend and no network needed to install it."""
    info = f"{PACKAGE}-1.2.3.dist-info"
    files = {
        f"{PACKAGE}/__init__.py": GREETKIT,
        f"{info}/METADATA": f"Metadata-Version: 2.1\nName: {PACKAGE}\nVersion: 1.2.3\n",
        f"{info}/WHEEL": "Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = []
    for name, text in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=")
        record.append(f"{name},sha256={digest.decode()},{len(text.encode())}")
    files[f"{info}/RECORD"] = "\n".join([*record, f"{info}/RECORD,,"]) + "\n"
    wheel = base / f"{PACKAGE}-1.2.3-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        for name, text in files.items():
            archive.writestr(name, text)
    return wheel


def _app_virtualenv(base: Path) -> Path:
    """A virtualenv made from Debian's python3 (with its bundled pip) where pip installed
    ``greetkit`` from a local wheel, offline."""
    venv = base / "venv"
    subprocess.run([SYSTEM_PYTHON, "-m", "venv", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    pip = [str(python), "-m", "pip", "install", "--quiet", "--no-index"]
    pip += ["--disable-pip-version-check", str(_wheel(base))]
    subprocess.run(pip, check=True, timeout=120, env=OFFLINE)
    return python


def _describe(base: Path, python: str) -> Path:
    app = base / "app"
    app.mkdir()
    (app / "greet.py").write_text(APP)
    description = app / "cpsysd.toml"
    description.write_text(
        textwrap.dedent(f"""\
            name = "greet"
            entry = "greet:application"
            kind = "wsgi"
            python = "{python}"
            listen = ["8080"]
            network = false
            """)
    )
    return description


@pytest.fixture
def open_tmp() -> Iterator[Path]:
    """A scratch directory a DynamicUser service can enter (pytest's tmp_path is 0700, and try
    refuses an interpreter there, as install would)."""
    path = Path(tempfile.mkdtemp(prefix="cpsysd-try-", dir="/tmp"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path)


def test_the_app_imports_a_package_only_its_virtualenv_has(
    container_allowed: None, tmp_path: Path, open_tmp: Path
) -> None:
    # Without the app's own packages the container would lack greetkit: it is neither one of
    # cpsysd's run-time dependencies nor importable by the interpreter running cpsysd.
    assert _key(PACKAGE) not in {_key(d.metadata["Name"]) for d in runtime_distributions()}
    assert find_spec(PACKAGE) is None
    python = _app_virtualenv(open_tmp)
    result = run_try(_describe(tmp_path, str(python)))
    print(result.stdout, result.stderr)
    assert result.returncode == 0
    out = result.stdout
    assert f"try: copied 1 package of {python}: {PACKAGE} 1.2.3\n" in out
    assert "try: left out (pip, and what only cpsysd's extras need): pip " in out
    assert "first request: HTTP 200 from http://127.0.0.1:8080/" in out
    # Answered by greetkit's code, from the copy in the container's virtualenv.
    site = "/opt/cpsysd/venv/lib/python3.11/site-packages"
    assert f"hello from greetkit at {site}/{PACKAGE}/__init__.py" in out
    assert "nothing left behind" in out


def test_a_missing_interpreter_is_one_line_before_any_container(
    container_allowed: None, tmp_path: Path
) -> None:
    missing = tmp_path / "no-venv" / "bin" / "python"
    result = run_try(_describe(tmp_path, str(missing)))
    assert result.returncode == 2
    assert result.stdout == ""  # nothing booted
    assert result.stderr.count("\n") == 1
    assert result.stderr.startswith(f"cpsysd: error: python: {missing} does not exist on this host")
    assert "set python to the interpreter that has the app's packages" in result.stderr


def _other_python() -> str | None:
    """A real interpreter of another Python version on this host (e.g. a pyenv build)."""
    mine = "{}.{}".format(*sys.version_info[:2])
    candidates = sorted(glob.glob("/usr/bin/python3.*") + glob.glob("/usr/local/bin/python3.*"))
    candidates += sorted(glob.glob("/root/.pyenv/versions/3.*/bin/python3"))
    candidates = [path for path in candidates if re.search(r"/python3(\.[0-9]+)?$", path)]
    for candidate in candidates:
        probe = [candidate, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"]
        try:
            version = subprocess.run(probe, capture_output=True, text=True, timeout=30).stdout
        except OSError:
            continue
        if version.strip() not in ("", mine):
            return candidate
    return None


def test_an_interpreter_of_another_python_version_is_one_line(
    container_allowed: None, tmp_path: Path
) -> None:
    other = _other_python()
    if other is None:
        pytest.skip("no interpreter of another Python version on this host")
    result = run_try(_describe(tmp_path, other))
    assert result.returncode == 2
    last = result.stderr.splitlines()
    assert len(last) == 1
    assert f"python: {other} is Python 3." in last[0]
    assert f"but services in the container run {SYSTEM_PYTHON} (Python 3.11)" in last[0]
    assert f"make the app's virtualenv with {SYSTEM_PYTHON} -m venv" in last[0]
    assert "nothing left behind" not in result.stdout  # the report is not printed


def test_an_interpreter_install_would_refuse_is_refused_before_any_container(
    container_allowed: None, tmp_path: Path, open_tmp: Path
) -> None:
    """try runs a copy of the app in the container, but refuses what install would: here a
    virtualenv in a 0700 directory, whose python a DynamicUser service cannot run."""
    private = open_tmp / "private"
    private.mkdir(mode=0o700)
    subprocess.run(
        [
            "/usr/bin/python3",
            "-m",
            "venv",
            "--without-pip",
            "--system-site-packages",
            private / "venv",
        ],
        check=True,
    )
    python = private / "venv" / "bin" / "python"
    result = run_try(_describe(tmp_path, str(python)))
    assert result.returncode != 0
    assert result.stdout == ""  # nothing booted
    assert result.stderr.count("\n") == 1, result.stderr
    assert f"cannot enter {private}" in result.stderr
    assert f"so it cannot run the interpreter {python}" in result.stderr
