"""cpsysd.harness.trying without a container: how a description is rewritten for inside it."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from cpsysd.description.load import AppSpec, TLSConfig, load_spec, parse_spec
from cpsysd.errors import CpsysdError, SpecError
from cpsysd.harness.trydemos import check_demos
from cpsysd.harness.trying import _Files, container_spec, journal_cause


def _spec(workdir: Path, tls: TLSConfig) -> AppSpec:
    spec = parse_spec(
        {"name": "app", "entry": "app:Root", "working_directory": str(workdir)},
        str(workdir),
        source=str(workdir / "cpsysd.toml"),
    )
    return dataclasses.replace(spec, tls=tls)


def test_every_tls_path_is_copied_in(tmp_path: Path) -> None:
    """Each path-valued [tls] field points inside the container afterwards; a field added to
    TLSConfig without a mapping in container_spec makes this fail."""
    outside = "/etc/secret-place"
    tls = TLSConfig(
        cert=f"{outside}/c.pem",
        key=f"{outside}/k.pem",
        chain=f"{outside}/chain.pem",
        renew_days=30,
        ca_dir=f"{outside}/ca",
        hosts=("localhost",),
        passphrase_file=f"{outside}/k.pass",
        ca_passphrase_file=f"{outside}/ca.pass",
    )
    files = _Files(tmp_path, "/srv/app")
    inside = container_spec(_spec(tmp_path, tls), "/opt/cpsysd/venv/bin/python", files)
    assert inside.tls is not None
    for item in dataclasses.fields(TLSConfig):
        before, after = getattr(tls, item.name), getattr(inside.tls, item.name)
        if isinstance(before, str) and before.startswith("/"):
            assert after != before, f"[tls] {item.name} still names the host path"
            assert files.extra[before] == after, item.name
        else:
            assert after == before, item.name
    assert len(files.extra) == 6


JOURNAL = [
    "[ 4963.792348] box systemd[1]: Starting app.service - app (served by cpsysd)...",
    "[ 4963.987631] box app[86]: ENGINE Error in 'start' listener <function open_db at 0x7f>",
    "                                Traceback (most recent call last):",
    '                                  File "/srv/app/app.py", line 12, in open_db',
    '                                    raise RuntimeError("no database")',
    "                                RuntimeError: no database",
    "[ 4963.990001] box app[86]: ENGINE Shutting down due to error in start listener:",
    "                                cherrypy.process.wspbus.ChannelFailures: RuntimeError('x')",
    "[ 4964.100000] box systemd[1]: app.service: Main process exited, status=1/FAILURE",
]


def test_journal_cause_is_the_apps_first_exception() -> None:
    assert journal_cause(JOURNAL) == "RuntimeError: no database"


def test_journal_cause_prefers_cpsysds_own_error_line() -> None:
    own = "[ 4963.9] box app[86]: cpsysd: error: cannot listen on 80: Permission denied"
    assert journal_cause([*JOURNAL, own]) == "cannot listen on 80: Permission denied"


def test_journal_cause_without_one_is_none() -> None:
    assert journal_cause(JOURNAL[:2]) is None


def _described(directory: Path, name: str, extra: str = "") -> Path:
    directory.mkdir()
    (directory / "app.py").write_text("")
    description = directory / "cpsysd.toml"
    description.write_text(f'name = "{name}"\nentry = "app:Root"\nlisten = ["8080"]\n{extra}')
    return description


def test_try_options_are_checked_before_anything_boots(tmp_path: Path) -> None:
    """--show-idle needs idle_stop_sec; --deploy takes a directory, or a description of the same
    app (returned, to be rewritten for the container); anything else is one error."""
    spec = load_spec(_described(tmp_path / "v1", "app"))
    with pytest.raises(SpecError, match="idle_stop_sec: is not set, so --show-idle"):
        check_demos(spec, None, show_idle=True)
    assert check_demos(spec, tmp_path / "v1", show_idle=False) is None  # a directory
    second = check_demos(spec, _described(tmp_path / "v2", "app"), show_idle=False)
    assert second is not None
    assert second.working_directory == str(tmp_path / "v2")
    with pytest.raises(CpsysdError, match="describes the app 'other', not 'app'"):
        check_demos(spec, _described(tmp_path / "v3", "other"), show_idle=False)
    with pytest.raises(CpsysdError, match="does not exist"):
        check_demos(spec, tmp_path / "missing", show_idle=False)
    idle = load_spec(_described(tmp_path / "v4", "app", "idle_stop_sec = 5\n"))
    assert check_demos(idle, None, show_idle=True) is None
