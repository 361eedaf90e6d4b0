"""Resource bounds and secrets in the rendered units, the install tree and the preflight:
every directive verified by the real systemd-analyze, bad values refused in one line."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from cpsysd.credentials import CredentialError, credential
from cpsysd.description.load import parse_spec
from cpsysd.errors import SpecError
from cpsysd.host.install import InstallTarget, install, read_manifest, uninstall
from cpsysd.host.preflight import credential_problems
from cpsysd.render.units import RenderOptions, render_units
from tests import unitparse as up
from tests.test_render import directives

OPTIONS = RenderOptions("/var/lib/cpsysd/app.toml")
SECRET = 'hunter2 $x "q" `b` \\ end'


def spec_of(**fields: object):
    base = {"name": "app", "entry": "app:Root", "python": "/usr/bin/python3"}
    return parse_spec({**base, **fields}, "/srv/app")


def dump(units: dict[str, str], tmp_path: Path) -> dict[str, up.UnitDump]:
    """What systemd-analyze verify loaded; it must have said nothing on stderr."""
    for name, text in units.items():
        (tmp_path / name).write_text(text)
    argv = ["systemd-analyze", "verify", *(str(tmp_path / n) for n in units)]
    quiet = subprocess.run(argv, capture_output=True, text=True, check=False)
    assert (quiet.returncode, quiet.stderr) == (0, "")
    env = {**os.environ, "SYSTEMD_LOG_LEVEL": "debug", "SYSTEMD_LOG_COLOR": "0"}
    loud = subprocess.run(argv, capture_output=True, env=env, check=False)
    return up.parse_dump(loud.stdout)


def test_default_bounds_reach_systemd(tmp_path: Path) -> None:
    service = dump(render_units(spec_of(), OPTIONS), tmp_path)["app.service"]
    assert service.values("MemoryHigh") == [str(512 << 20)]
    assert service.values("MemoryMax") == [str(768 << 20)]
    assert service.values("TasksMax") == ["256"]
    assert service.values("LimitNOFILE") == ["65536"]


def test_worker_instances_get_the_bounds_too(tmp_path: Path) -> None:
    spec = spec_of(workers=2, memory_high="1G", memory_max="infinity", tasks_max=64)
    units = render_units(spec, OPTIONS)
    instance = dict(directives(units["app@.service"]))
    assert instance["MemoryHigh"] == "1G"
    assert instance["MemoryMax"] == "infinity"
    assert instance["TasksMax"] == "64"
    assert instance["LimitNOFILE"] == "65536"
    # What systemd loads from a template: tests/test_hostile_verify.py, with random workers.


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"memory_max": "12X"}, "memory_max: '12X' is not a size systemd understands"),
        ({"memory_max": "1.5G"}, "memory_max: '1.5G' is not a size systemd understands"),
        ({"memory_max": "0"}, "memory_max: '0' is not a size systemd understands"),
        ({"memory_max": "50%"}, "memory_max: '50%' is not a size systemd understands"),
        ({"memory_high": "99999999999999999999T"}, "is not a size systemd understands"),
        ({"memory_high": "16M"}, "memory_high: 16M is too little for a Python app to start"),
        ({"memory_max": 512}, "memory_max: "),
        ({"memory_high": "1G", "memory_max": "512M"}, "memory_high: 1G is above memory_max"),
        ({"memory_high": "infinity"}, "memory_high: infinity is above memory_max = 768M"),
        ({"tasks_max": 8}, "tasks_max: "),
        ({"tasks_max": "256"}, "tasks_max: "),
        ({"limit_nofile": 10**9}, "limit_nofile: "),
        ({"credentials": {"tls-key": "/etc/k"}}, "credentials.tls-key: is not a credential"),
        ({"credentials": {"a:b": "/etc/k"}}, "credentials.a:b: is not a credential name"),
        ({"credentials": {".x": "/etc/k"}}, "credentials..x: is not a credential name"),
        ({"credentials": {"db": "/etc/a b"}}, "credentials.db: '/etc/a b' contains ' '"),
        ({"credentials": ["db"]}, "credentials: "),
    ],
)
def test_bad_values_are_refused_in_one_line(fields: dict[str, object], message: str) -> None:
    with pytest.raises(SpecError) as caught:
        spec_of(**fields)
    assert message in caught.value.one_line()
    assert "\n" not in caught.value.one_line()


def test_cli_refuses_a_bad_size_in_one_line(tmp_path: Path) -> None:
    description = tmp_path / "cpsysd.toml"
    description.write_text('name = "app"\nentry = "app:Root"\nmemory_max = "lots"\n')
    result = subprocess.run(
        [sys.executable, "-m", "cpsysd", "generate", "-c", str(description), "-o", str(tmp_path)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1, result.stderr
    assert "memory_max: 'lots' is not a size systemd understands" in result.stderr


def test_credentials_become_load_credential(tmp_path: Path) -> None:
    spec = spec_of(credentials={"db-password": "/etc/app/db", "api.token": "secrets/api"})
    units = render_units(spec, OPTIONS)
    got = [v for k, v in directives(units["app.service"]) if k == "LoadCredential"]
    assert got == ["db-password:/etc/app/db", "api.token:/srv/app/secrets/api"]
    dump(units, tmp_path)  # systemd-analyze accepts them, silently


def test_install_keeps_environment_values_root_only(tmp_path: Path) -> None:
    spec = spec_of(environment={"DB_PASSWORD": SECRET}, environment_file="/etc/default/app")
    install(spec, InstallTarget(root=tmp_path))
    env = tmp_path / "var/lib/cpsysd/app.env"
    info = env.stat()
    assert (stat.S_IMODE(info.st_mode), info.st_uid) == (0o600, os.geteuid())
    unit = (tmp_path / "etc/systemd/system/app.service").read_text()
    description = (tmp_path / "var/lib/cpsysd/app.toml").read_text()
    for text in (unit, description):
        assert "hunter2" not in text
    lines = [v for k, v in directives(unit) if k == "EnvironmentFile"]
    assert lines == ["/var/lib/cpsysd/app.env", "/etc/default/app"]  # the admin's file wins
    assert env.read_text().splitlines()[1] == 'DB_PASSWORD="hunter2 \\$x \\"q\\" \\`b\\` \\\\ end"'
    manifest = read_manifest("app", InstallTarget(root=tmp_path))
    assert manifest is not None
    assert "/var/lib/cpsysd/app.env" in manifest["files"]

    env.chmod(0o644)  # widened by hand: the next install narrows it again
    report = install(spec, InstallTarget(root=tmp_path))
    assert str(env) in report.written
    assert stat.S_IMODE(env.stat().st_mode) == 0o600

    install(spec_of(), InstallTarget(root=tmp_path))  # no environment any more: no file
    assert not env.exists()
    install(spec, InstallTarget(root=tmp_path))
    uninstall("app", InstallTarget(root=tmp_path))
    assert not env.exists()


def test_no_environment_no_file(tmp_path: Path) -> None:
    install(spec_of(), InstallTarget(root=tmp_path))
    assert not (tmp_path / "var/lib/cpsysd/app.env").exists()


def test_preflight_checks_credential_files(tmp_path: Path) -> None:
    good, loose, fifo = tmp_path / "good", tmp_path / "loose", tmp_path / "fifo"
    good.write_text("s\n")
    good.chmod(0o600)
    loose.write_text("s\n")
    loose.chmod(0o644)
    os.mkfifo(fifo, 0o600)
    table = {"a": str(good), "b": str(loose), "c": str(tmp_path / "none"), "d": str(fifo)}
    problems = [p.one_line() for p in credential_problems(spec_of(credentials=table))]
    assert problems == [
        f"credentials.b: {loose} is readable by others (mode 644) (chmod 600 {loose}; the "
        "service gets its own copy)",
        f"credentials.c: {tmp_path / 'none'} does not exist (create it, mode 0600)",
        f"credentials.d: {fifo} is not a regular file (name a file)",
    ]


def test_credential_helper(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import cpsysd

    assert cpsysd.credential is credential
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    with pytest.raises(CredentialError, match=r"\$CREDENTIALS_DIRECTORY is not set"):
        credential("db-password")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))
    (tmp_path / "db-password").write_bytes(b"s3cret\r\n")
    assert credential("db-password") == "s3cret"
    with pytest.raises(CredentialError) as caught:
        credential("other")
    assert caught.value.one_line() == (
        f"credential 'other' is not in {tmp_path} (add other = \"/path/of/the/file\" to the "
        "credentials table and run cpsysd install)"
    )
    with pytest.raises(CredentialError, match="not a credential name"):
        credential("../etc/shadow")


def test_the_helper_imports_no_generator_code() -> None:
    code = "import sys, cpsysd; print(sorted(m for m in sys.modules if m.startswith('cpsysd')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "['cpsysd', 'cpsysd.credentials', 'cpsysd.errors']"
