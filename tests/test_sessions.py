"""cpsysd.host.sessions through ``cpsysd verify``, as real processes: the import probe reads the
app's CherryPy config with CherryPy's reader and its ``_cp_config``, and verify warns (a line on
stderr, exit status 0) when sessions would break: in RAM with several workers, or in files that
ProtectSystem=strict keeps read-only."""

from __future__ import annotations

import dataclasses
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from cpsysd.description.load import AppSpec, load_spec
from cpsysd.host.sessions import SessionUse, session_warnings
from tests.test_preflight import run

COUNTER = Path(__file__).resolve().parent.parent / "examples" / "sessions"
WARNING = "cpsysd: warning: "


@pytest.fixture
def app() -> Iterator[Path]:
    """The sessions example in a directory the probe's user (nobody, under root) can enter."""
    path = Path(tempfile.mkdtemp(prefix="cpsysd-sessions-", dir="/tmp"))
    path.chmod(0o755)
    shutil.copy(COUNTER / "counter.py", path / "counter.py")
    try:
        yield path
    finally:
        shutil.rmtree(path)


def verify_warnings(app: Path, description: str, config: str | None = None) -> list[str]:
    """``cpsysd verify`` succeeds; its warning lines, without the prefix."""
    if config is not None:
        (app / "app.conf").write_text(config)
        description += 'config = "app.conf"\n'
    (app / "cpsysd.toml").write_text(
        f'name = "counter"\nentry = "counter:Root"\nnetwork = false\n{description}'
    )
    result = run("verify", "-c", str(app / "cpsysd.toml"))
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("preflight: counter:Root imports as a cherrypy app")
    lines = result.stderr.splitlines()
    assert all(line.startswith(WARNING) for line in lines), result.stderr
    return [line.removeprefix(WARNING) for line in lines]


FILES = (
    "[/]\n"
    "tools.sessions.on = True\n"
    "tools.sessions.storage_class = cherrypy.lib.sessions.FileSession\n"
    "tools.sessions.storage_path = {path}\n"
)


def test_ram_sessions_with_workers_are_a_warning(app: Path) -> None:
    # counter.Root turns sessions on in its _cp_config; no config says where they go. In one
    # process that is fine.
    assert verify_warnings(app, "") == []
    (line,) = verify_warnings(app, "workers = 3\n")
    assert line.startswith(
        "CherryPy keeps sessions in RAM (Root._cp_config: tools.sessions.on) with workers = 3:"
    )
    assert "tools.sessions.storage_class = cherrypy.lib.sessions.FileSession" in line


def test_the_deprecated_storage_type_and_a_config_section_count_too(app: Path) -> None:
    config = '[/count]\ntools.sessions.on = True\ntools.sessions.storage_type = "ram"\n'
    (line,) = verify_warnings(app, "workers = 2\n", config)
    assert "(Root._cp_config, config [/count]: tools.sessions.on) with workers = 2" in line


def test_file_sessions_outside_the_state_directory_are_a_warning(app: Path) -> None:
    lines = verify_warnings(app, "workers = 3\n", FILES.format(path='"/srv/counter"'))
    assert lines == [
        "CherryPy file sessions (Root._cp_config, config [/]) in /srv/counter, which "
        "ProtectSystem=strict "
        "keeps read-only: requests with a session will answer 500; set state_directory = true "
        'and tools.sessions.storage_path = "/var/lib/counter" (docs/recipes.md, CherryPy '
        "sessions with workers)"
    ]


def test_file_sessions_in_the_state_directory_from_the_environment(app: Path) -> None:
    """The probe gets $STATE_DIRECTORY as the service would, so a config that reads it parses
    (without it: KeyError) and the sessions land in /var/lib/NAME: no warning."""
    config = FILES.format(path='os.environ["STATE_DIRECTORY"]')
    assert verify_warnings(app, "workers = 3\nstate_directory = true\n", config) == []
    # The same path without state_directory = true: read-only, so the warning says so.
    config = FILES.format(path='"/var/lib/counter"')
    (line,) = verify_warnings(app, "workers = 3\n", config)
    assert "in /var/lib/counter, which ProtectSystem=strict keeps read-only" in line


def test_file_sessions_in_private_tmp(tmp_path: Path) -> None:
    spec = load_spec_text(tmp_path, "workers = 3\n")
    (line,) = session_warnings(spec, [SessionUse("config [/]", "file", "/tmp/s")])
    assert "PrivateTmp=yes gives each of the 3 workers its own /tmp" in line
    one = dataclasses.replace(spec, workers=1)
    assert session_warnings(one, [SessionUse("config [/]", "file", "/tmp/s")]) == []
    # Memcached or the app's own class: cpsysd cannot judge it, so it says nothing.
    assert session_warnings(spec, [SessionUse("config [/]", "other", None)]) == []


def test_file_sessions_without_a_path(tmp_path: Path) -> None:
    spec = load_spec_text(tmp_path, "state_directory = true\n")
    (line,) = session_warnings(spec, [SessionUse("Root._cp_config", "file", None)])
    assert line.startswith("CherryPy file sessions (Root._cp_config) have no ")
    private = SessionUse("x", "file", "/var/lib/private/counter/s")  # a DynamicUser's real path
    assert session_warnings(spec, [private]) == []


def load_spec_text(directory: Path, extra: str) -> AppSpec:
    (directory / "cpsysd.toml").write_text(
        f'name = "counter"\nentry = "counter:Root"\nnetwork = false\n{extra}'
    )
    return load_spec(directory / "cpsysd.toml")
