"""cpsysd.host.preflight through the CLI, as real processes: apps that cannot start are caught by
``verify`` (and ``install``) with one line naming the field, before anything is written."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import EXAMPLE, run_with_private_unit_dirs

CPSYSD = [sys.executable, "-m", "cpsysd"]


def run(*args: str, cwd: Path | None = None, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CPSYSD, *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env={**os.environ, **env},
        check=False,
    )


def assert_one_line_error(result: subprocess.CompletedProcess[str], *words: str) -> str:
    assert result.returncode != 0, result.stdout
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("cpsysd: error: "), lines[0]
    for word in words:
        assert word in lines[0], lines[0]
    return lines[0]


@pytest.fixture
def app() -> Iterator[Path]:
    """The example app in a directory the probe's user (nobody, under root) can enter."""
    path = Path(tempfile.mkdtemp(prefix="cpsysd-preflight-", dir="/tmp"))
    path.chmod(0o755)
    shutil.copy(EXAMPLE / "hello.py", path / "hello.py")
    try:
        yield path
    finally:
        shutil.rmtree(path)


def describe(app: Path, extra: str = "", entry: str = "hello:Root") -> Path:
    description = app / "cpsysd.toml"
    description.write_text(f'name = "hello"\nentry = "{entry}"\nnetwork = false\n{extra}')
    return description


def verify_fails(app: Path, *words: str) -> str:
    """``cpsysd verify`` refuses with one line, and leaves the app's directory as it was."""
    before = sorted(p.name for p in app.rglob("*"))
    line = assert_one_line_error(run("verify", "-c", str(app / "cpsysd.toml")), *words)
    assert sorted(p.name for p in app.rglob("*")) == before  # no __pycache__ either
    return line


def test_a_startable_app_verifies_and_says_how_it_was_imported(app: Path) -> None:
    describe(app)
    result = run("verify", "-c", str(app / "cpsysd.toml"))
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0] == (
        f"preflight: hello:Root imports as a cherrypy app (uid 65534, {sys.executable})"
    )
    assert "exposure 0.2" in result.stdout.splitlines()


def test_a_wsgi_callable_is_told_apart(app: Path) -> None:
    (app / "wsgiapp.py").write_text("def application(environ, start_response):\n    return []\n")
    describe(app, entry="wsgiapp:application")
    result = run("verify", "-c", str(app / "cpsysd.toml"))
    assert result.returncode == 0, result.stderr
    assert "imports as a wsgi app" in result.stdout


def test_missing_entry_object(app: Path) -> None:
    describe(app, entry="hello:Rooot")
    verify_fails(app, "error: entry: 'hello' has no attribute 'Rooot'")


def test_missing_entry_module(app: Path) -> None:
    describe(app, entry="helo:Root")
    verify_fails(app, "error: entry: no module 'helo' in ", "check entry and working_directory")


def test_syntax_error_in_the_module(app: Path) -> None:
    (app / "hello.py").write_text("import cherrypy\nclass Root:\n    def index(self)\n")
    describe(app)
    verify_fails(app, "error: entry: 'hello' has a syntax error: ", "hello.py, line 3")


def test_a_declared_kind_that_does_not_fit(app: Path) -> None:
    (app / "objects.py").write_text("import cherrypy\nclass R:\n    pass\nroot = R()\n")
    describe(app, 'kind = "cherrypy"\n', entry="objects:root")
    verify_fails(app, "error: kind: objects:root is no CherryPy root", 'kind = "wsgi"')


def test_missing_cherrypy_config(app: Path) -> None:
    describe(app, 'config = "app.conf"\n')
    verify_fails(app, "error: config: ", "/app.conf does not exist", "create it")


def test_a_cherrypy_config_that_does_not_parse(app: Path) -> None:
    (app / "app.conf").write_text("[global]\nserver.thread_pool = ten\n")
    describe(app, 'config = "app.conf"\n')
    verify_fails(app, "error: config: ", "app.conf does not parse: ")


def test_missing_environment_file(app: Path) -> None:
    describe(app, f'environment_file = "{app}/missing.env"\n')
    verify_fails(app, f"error: environment_file: {app}/missing.env does not exist")


def test_the_probe_sees_the_service_environment_not_ours(app: Path) -> None:
    (app / "app.env").write_text("# a comment\nFROM_FILE='yes'\n")
    (app / "envapp.py").write_text(
        "import os\n"
        "seen = {k: os.environ.get(k) for k in ('GREETING', 'FROM_FILE', 'LEAKED')}\n"
        "if seen != {'GREETING': 'hi', 'FROM_FILE': 'yes', 'LEAKED': None}:\n"
        "    raise RuntimeError(seen)\n"
        "def application(environ, start_response):\n    return []\n"
    )
    describe(
        app,
        f'environment_file = "{app}/app.env"\n[environment]\nGREETING = "hi"\n',
        entry="envapp:application",
    )
    result = run("verify", "-c", str(app / "cpsysd.toml"), LEAKED="from cpsysd's caller")
    assert result.returncode == 0, result.stderr


@pytest.mark.skipif(os.geteuid() != 0, reason="dropping to nobody needs root")
def test_app_code_never_runs_as_root(app: Path) -> None:
    (app / "whoami.py").write_text("import os\nraise RuntimeError(f'uid {os.getuid()}')\n")
    describe(app, entry="whoami:app")
    verify_fails(app, "error: entry: importing 'whoami' failed: RuntimeError: uid 65534")
    describe(app, 'user = "daemon"\n', entry="whoami:app")  # a named user: that user
    verify_fails(app, "RuntimeError: uid 1 (")


def test_relative_python(app: Path) -> None:
    describe(app, 'python = "venv/bin/python"\n')
    verify_fails(app, "error: python: 'venv/bin/python' is a relative path")


def test_an_interpreter_that_is_not_there(app: Path) -> None:
    describe(app, f'python = "{app}/venv/bin/python"\n')
    verify_fails(app, f"error: python: {app}/venv/bin/python does not exist", "absolute path")


def test_an_interpreter_without_the_apps_dependencies(app: Path) -> None:
    venv = app / "venv"
    subprocess.run(["/usr/bin/python3", "-m", "venv", "--without-pip", str(venv)], check=True)
    describe(app, f'python = "{venv}/bin/python"\n')
    verify_fails(
        app,
        f"error: python: {venv}/bin/python cannot import 'hello': ",
        "No module named 'cherrypy'",
        "install the app's dependencies into it",
    )


def test_unknown_key_suggests_the_known_one(app: Path) -> None:
    describe(app, "wokers = 2\n")
    verify_fails(app, "error: wokers: unknown key (did you mean 'workers'?)")


def test_no_preflight_checks_only_the_units(app: Path) -> None:
    describe(app, entry="hello:Rooot")
    result = run("verify", "--no-preflight", "-c", str(app / "cpsysd.toml"))
    assert result.returncode == 0, result.stderr
    assert "preflight" not in result.stdout
    help_text = run("verify", "--help").stdout
    assert "another machine" in " ".join(help_text.split())


def _cert(app: Path, stem: str) -> None:
    made = run(
        "cert", "selfsigned", "--cert", f"{stem}.pem", "--key", f"{stem}.key", "localhost", cwd=app
    )
    assert made.returncode == 0, made.stderr


def _tls(app: Path, cert: str, key: str) -> None:
    tls = f'listen = ["8443=https"]\n[tls]\ncert = "{cert}"\nkey = "{key}"\n'
    describe(app, tls)


def test_tls_files_that_fit(app: Path) -> None:
    _cert(app, "a")
    _tls(app, "a.pem", "a.key")
    result = run("verify", "-c", str(app / "cpsysd.toml"))
    assert result.returncode == 0, result.stderr


def test_missing_tls_file(app: Path) -> None:
    _cert(app, "a")
    _tls(app, "a.pem", "missing.key")
    verify_fails(app, f"error: tls.key: {app}/missing.key does not exist", "cpsysd cert")


def test_certificate_and_key_that_do_not_match(app: Path) -> None:
    _cert(app, "a")
    _cert(app, "b")
    _tls(app, "a.pem", "b.key")
    verify_fails(app, f"error: tls.key: {app}/b.key does not match the certificate {app}/a.pem")


def test_install_refuses_before_writing(app: Path) -> None:
    """As test_reach does it: a mount namespace of its own with empty tmpfs over the unit and
    state directories, so even a broken check could not write to this machine's
    /etc/systemd/system."""
    description = describe(app, entry="hello:Rooot")
    install = [*CPSYSD, "install", "hello", "-c", str(description)]
    result = run_with_private_unit_dirs(install)
    assert result.stdout == "rc=2\n"  # and nothing found in either directory
    assert result.stderr == "cpsysd: error: entry: 'hello' has no attribute 'Rooot' (fix entry)\n"


def test_init_writes_the_interpreter_that_found_the_app(app: Path) -> None:
    made = run("init", "--name", "hello", "--entry", "hello:Root", "-o", "cpsysd.toml", cwd=app)
    assert made.returncode == 0, made.stderr
    lines = (app / "cpsysd.toml").read_text().splitlines()
    (python,) = [line for line in lines if line.startswith("python =")]
    assert python.startswith(f'python = "{os.path.abspath(sys.executable)}"')


@pytest.mark.skipif(os.geteuid() != 0, reason="cpsysd try needs root")
def test_try_refuses_before_booting(app: Path) -> None:
    describe(app, entry="hello:Rooot")
    result = run("try", "-c", str(app / "cpsysd.toml"))
    assert_one_line_error(result, "error: entry: 'hello' has no attribute 'Rooot'")
    assert "booting" not in result.stdout


class _Exposed:
    def index(self) -> str:
        return "hi"

    index.exposed = True  # type: ignore[attr-defined]


class _Configured:
    _cp_config = {"tools.sessions.on": True}  # noqa: RUF012


class _Wsgi:
    def __call__(self, environ: object, start_response: object) -> list[bytes]:
        return [b"hi"]


def _wsgi_function(environ: object, start_response: object) -> list[bytes]:
    return [b"hi"]


def test_the_probe_judges_cherrypy_roots_as_the_runtime_does() -> None:
    """host/probe.py runs without cpsysd in the app's interpreter, so it keeps its own copy of
    the runtime's root test (runtime/app.py): the two must agree."""
    from cpsysd.host import probe
    from cpsysd.runtime.app import looks_like_cherrypy_root

    holder = _Wsgi()
    holder.__dict__["page"] = _Exposed().index
    samples = [_Exposed(), _Configured(), _Wsgi(), _wsgi_function, holder, object()]
    judged = [(probe._looks_like_cherrypy_root(s), looks_like_cherrypy_root(s)) for s in samples]
    assert [mine for mine, _ in judged] == [theirs for _, theirs in judged]
    assert [mine for mine, _ in judged] == [True, True, False, False, True, False]
