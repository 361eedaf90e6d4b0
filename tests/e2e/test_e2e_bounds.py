"""Resource bounds and secrets under a real systemd (cpsysd.harness.container): an app with an
``environment`` secret, a ``credentials`` file and custom bounds, installed with the real
``cpsysd install``. The app reads its credential through ``cpsysd.credential()`` and sees the
environment value intact; ``nobody`` cannot read that value from the unit, ``systemctl show``,
the environment file or the resolved description; the limits are what systemd applied.

MemoryMax/TasksMax are not enforced in this machine's container (cgroup v1 controllers on the
host, reference/FINDINGS.md), so they are checked as configured (``systemctl show``);
LimitNOFILE is an rlimit and is checked in the running process's /proc/PID/limits."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from cpsysd.harness.container import Container
from tests.e2e.e2etools import curl, example_spec, install_app

pytestmark = pytest.mark.e2e
# Characters systemd's environment-file parser treats specially, and a trailing space.
ENV_VALUE = 'pa$$ "w\\ord` %i $HOME '
CREDENTIAL = "credential 6c1e never to be shown"
APP = """
import hashlib, os

import cherrypy

import cpsysd


class Root:
    @cherrypy.expose
    def index(self):
        return "ok"

    @cherrypy.expose
    def secret_length(self):
        return str(len(cpsysd.credential("db-password")))

    @cherrypy.expose
    def env_digest(self):
        return hashlib.sha256(os.environ["DB_PASSWORD"].encode()).hexdigest()

    @cherrypy.expose
    def missing(self):
        try:
            cpsysd.credential("not-there")
        except cpsysd.CredentialError as err:
            return err.one_line()
        return "found?"
"""


@pytest.fixture
def box(container: Container) -> Container:
    """The shared booted container of tests/e2e/conftest.py."""
    return container


def test_secrets_stay_private_and_bounds_apply(box: Container, tmp_path: Path) -> None:
    (tmp_path / "vault.py").write_text(APP)
    for path in (tmp_path, tmp_path / "vault.py"):  # the DynamicUser must read the copy
        path.chmod(0o755)
    secret_file = "/etc/cpsysd/vault/db-password"
    box.write_file(secret_file, CREDENTIAL + "\n", 0o600)
    spec = example_spec(
        name="vault",
        entry="vault:Root",
        config=None,
        environment=(("DB_PASSWORD", ENV_VALUE),),
        credentials=(("db-password", secret_file),),
        memory_high="300M",
        memory_max="400M",
        tasks_max=100,
        limit_nofile=4096,
    )
    python = install_app(box, spec, source=tmp_path)

    status, _, body = curl(box, "http://127.0.0.1:8080/secret_length")
    assert (status, body) == (200, str(len(CREDENTIAL)))
    status, _, body = curl(box, "http://127.0.0.1:8080/env_digest")
    assert (status, body) == (200, hashlib.sha256(ENV_VALUE.encode()).hexdigest())
    status, _, body = curl(box, "http://127.0.0.1:8080/missing")
    assert status == 200
    assert "credential 'not-there' is not in /run/credentials/vault.service" in body

    files = {
        "unit": "/etc/systemd/system/vault.service",
        "env": "/var/lib/cpsysd/vault.env",
        "description": "/var/lib/cpsysd/vault.toml",
    }
    modes = box.run(["stat", "-c", "%a %U %n", files["env"], secret_file]).stdout.splitlines()
    assert modes == [f"600 root {files['env']}", f"600 root {secret_file}"]
    for what, path in files.items():
        seen = box.run(["cat", path], user="nobody", check=False)
        assert ENV_VALUE.strip() not in seen.stdout + seen.stderr, what
        assert CREDENTIAL not in seen.stdout, what
        if what == "env":
            assert seen.returncode != 0
            assert "Permission denied" in seen.stderr
        else:
            assert seen.returncode == 0, (what, seen.stderr)  # readable, and holds no secret
    show = box.run(["systemctl", "show", "vault.service"], user="nobody").stdout
    assert ENV_VALUE.strip() not in show
    assert CREDENTIAL not in show
    assert f"EnvironmentFiles={files['env']} (ignore_errors=no)" in show

    shown = box.run(
        ["systemctl", "show", "-p", "MemoryHigh,MemoryMax,TasksMax,LimitNOFILE", "vault.service"]
    ).stdout.splitlines()
    assert sorted(shown) == [
        "LimitNOFILE=4096",
        f"MemoryHigh={300 << 20}",
        f"MemoryMax={400 << 20}",
        "TasksMax=100",
    ]
    pid = box.run(["systemctl", "show", "-p", "MainPID", "--value", "vault.service"]).stdout
    limits = box.run(["cat", f"/proc/{pid.strip()}/limits"]).stdout
    [line] = [ln for ln in limits.splitlines() if ln.startswith("Max open files")]
    assert line.split()[3:5] == ["4096", "4096"], line

    box.run([python, "-m", "cpsysd", "uninstall", "vault"])
    assert box.run(["test", "-e", files["env"]], check=False).returncode == 1
