"""``cpsysd export ansible``: the role and playbook pass the real ``ansible-playbook
--syntax-check`` (and ansible-lint); the role's templates, rendered by real Ansible, give a site
the real ``nginx -t`` accepts and an environment file with systemd's quoting; bad input fails
with one line. Hosts are never contacted here (tests/e2e/test_e2e_ansible.py does that)."""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from scalekit import nginx_problems, nginx_test

from cpsysd.description.load import load_spec, parse_spec
from cpsysd.errors import SpecError
from cpsysd.host.exporting import export_ansible
from cpsysd.targets.ansible import fleet_of, host_spec, render_role
from tests.conftest import EXAMPLE

ANSIBLE = shutil.which("ansible-playbook")
needs_ansible = pytest.mark.skipif(ANSIBLE is None, reason="scripts/setup.sh installs ansible-core")
INVENTORY = """[app]
app1 cpsysd_address=192.0.2.11
app2 cpsysd_address=192.0.2.12
app3 ansible_host=2001:db8::13

[front]
front1
"""


def export(tmp_path: Path, config: Path = EXAMPLE / "cpsysd.toml", *extra: str) -> Path:
    output = tmp_path / "deploy"
    result = subprocess.run(
        [sys.executable, "-m", "cpsysd", "export", "ansible", "-c", str(config),
         "-o", str(output), *extra],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    (output / "inventory.ini").write_text(INVENTORY)
    return output


def ansible_env(tmp_path: Path) -> dict[str, str]:
    # No ~/.ansible or ansible.cfg of whoever runs the tests.
    return {**os.environ, "ANSIBLE_LOCAL_TEMP": str(tmp_path / "ansible-tmp"),
            "ANSIBLE_CONFIG": str(tmp_path / "none.cfg"), "HOME": str(tmp_path)}  # fmt: skip


def render_with_ansible(
    tmp_path: Path, output: Path, template: str, variables: dict[str, object]
) -> str:
    """Render one of the role's templates with real Ansible, on the controller only (nothing
    is deployed: it is the template engine under test), with the role's vars and defaults."""
    role = next((output / "roles").iterdir())
    result_file = tmp_path / "rendered"
    extra = tmp_path / "extra.json"  # extra vars: above the vars_files below
    extra.write_text(json.dumps(variables))
    playbook = tmp_path / "render.yml"
    playbook.write_text(json.dumps([{
        "name": "render", "hosts": "front1", "gather_facts": False, "connection": "local",
        "vars_files": [str(role / "defaults/main.yml"), str(role / "vars/main.yml")],
        "tasks": [{"ansible.builtin.template": {"src": str(role / "templates" / template),
                                                "dest": str(result_file), "mode": "0600"}}],
    }]))  # fmt: skip
    result = subprocess.run(
        [str(ANSIBLE), "-i", str(output / "inventory.ini"), "-e", f"@{extra}", str(playbook)],
        capture_output=True, text=True, timeout=120, check=False, env=ansible_env(tmp_path),
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    return result_file.read_text()


@needs_ansible
def test_hello_passes_syntax_check_and_lint(tmp_path: Path) -> None:
    output = export(tmp_path)
    role = output / "roles" / "cpsysd_hello"
    assert (role / "files" / "app" / "hello.py").read_bytes() == (EXAMPLE / "hello.py").read_bytes()
    check = subprocess.run(
        [str(ANSIBLE), "-i", str(output / "inventory.ini"), "--syntax-check", "site.yml"],
        cwd=output, capture_output=True, text=True, timeout=120, check=False,
        env=ansible_env(tmp_path),
    )  # fmt: skip
    assert check.returncode == 0, check.stdout + check.stderr
    site = (output / "site.yml").read_text()
    assert "max_fail_percentage: 0" in site
    assert "any_errors_fatal: true" in site
    assert "cpsysd_serial | default(1)" in site
    if shutil.which("ansible-lint") is None:
        pytest.skip("ansible-lint is not installed (scripts/setup.sh installs it)")
    lint = subprocess.run(
        ["ansible-lint", "--offline", "site.yml"], cwd=output, capture_output=True, text=True,
        timeout=300, check=False, env={**ansible_env(tmp_path), "NO_COLOR": "1"},
    )  # fmt: skip
    assert lint.returncode == 0, lint.stdout + lint.stderr


@needs_ansible
def test_site_rendered_by_ansible_lists_every_app_host_and_passes_nginx(tmp_path: Path) -> None:
    # examples/hello has no [nginx] table: the front gets cpsysd nginx's defaults.
    output = export(tmp_path)
    site = render_with_ansible(tmp_path, output, "nginx-site.conf.j2", {})
    servers = [
        line.strip()
        for line in site.splitlines()
        if line.strip().startswith("server ") and "{" not in line
    ]
    assert servers == [
        "server 192.0.2.11:8080 max_fails=1 fail_timeout=10s;",
        "server 192.0.2.12:8080 max_fails=1 fail_timeout=10s;",
        "server [2001:db8::13]:8080 max_fails=1 fail_timeout=10s;",
    ]
    assert "{%" not in site
    assert "{{" not in site
    result = nginx_test(
        tmp_path / "nginx",
        site.replace("listen 80;", "listen 18080;").replace(
            "listen [::]:80;", "listen [::]:18080;"
        ),
    )
    assert result.returncode == 0, result.stderr
    assert nginx_problems(result) == []


@needs_ansible
def test_secrets_reach_the_environment_file_quoted_for_systemd(tmp_path: Path) -> None:
    output = export(tmp_path)
    secret = 'pa"ss $HOME `id` back\\slash'
    text = render_with_ansible(
        tmp_path, output, "environment.j2", {"cpsysd_secrets": {"DB_PASSWORD": secret}}
    )
    assert 'DB_PASSWORD="pa\\"ss \\$HOME \\`id\\` back\\\\slash"' in text.splitlines()
    # Nothing of the secret is in the exported files: it only ever lives in the vault.
    exported = "".join(p.read_text() for p in output.rglob("*") if p.is_file())
    assert "DB_PASSWORD" not in exported


def test_worker_ports_and_host_paths(tmp_path: Path) -> None:
    (tmp_path / "app.conf").write_text("[/]\n")
    spec = parse_spec(
        {"name": "shop", "entry": "shop:Root", "workers": 3, "worker_mode": "ports",
         "listen": ["127.0.0.1:9100=admin", "9100"], "config": "app.conf",
         "nginx": {"server_name": ["shop.example"]}},
        str(tmp_path),
    )  # fmt: skip
    assert fleet_of(spec).ports == (9100, 9101, 9102)  # the loopback listener is not reachable
    moved = host_spec(spec)
    assert moved.working_directory == "/opt/cpsysd/apps/shop"
    assert moved.config == "/opt/cpsysd/apps/shop/app.conf"
    assert moved.python == "/opt/cpsysd/venv/bin/python"
    assert moved.environment_file == "/etc/cpsysd/shop.env"
    files = render_role(spec, "25%")
    assert 'default("25%")' in files["site.yml"]
    assert '"shop.target"' in files["roles/cpsysd_shop/vars/main.yml"]


@pytest.mark.parametrize(
    ("fields", "serial", "message"),
    [
        ({"listen": ["/run/shop/shop.sock"]}, "1", "listen: has no plain TCP listener"),
        ({"listen": ["127.0.0.1:8080"]}, "1", "listen: has no plain TCP listener"),
        ({}, "0", "serial: '0' is not a host count"),
        ({}, "all", "serial: 'all' is not a host count"),
    ],
)
def test_refused_descriptions(tmp_path: Path, fields: dict[str, object], serial: str,
                              message: str) -> None:  # fmt: skip
    spec = parse_spec({"name": "shop", "entry": "shop:Root", **fields}, str(tmp_path))
    with pytest.raises(SpecError, match=message):
        render_role(spec, serial)


def run_export(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cpsysd", "export", "ansible", *args],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


def test_bad_input_gives_one_line(tmp_path: Path) -> None:
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine\n")
    unix = tmp_path / "unix.toml"
    unix.write_text('name = "shop"\nentry = "shop:Root"\nlisten = ["/run/shop.sock"]\n')
    cases = [
        (["-c", str(tmp_path / "missing.toml"), "-o", str(tmp_path / "out")], "no such file"),
        (["-c", str(EXAMPLE / "cpsysd.toml"), "-o", str(foreign)], "not made by cpsysd export"),
        (["-c", str(EXAMPLE / "cpsysd.toml"), "-o", str(foreign / "notes.txt")], "not a directory"),
        (["-c", str(unix), "-o", str(tmp_path / "out")], "no plain TCP listener"),
        (
            ["-c", str(EXAMPLE / "cpsysd.toml"), "-o", str(tmp_path / "o"), "--serial", "x"],
            "serial",
        ),
    ]
    for args, message in cases:
        result = run_export(*args)
        assert result.returncode != 0, args
        assert result.stderr.startswith("cpsysd: error: "), args
        assert message in result.stderr, args
        assert len(result.stderr.splitlines()) == 1, args
    assert (foreign / "notes.txt").read_text() == "mine\n"  # not ours: left alone
    assert not (tmp_path / "out").exists()


def test_export_again_replaces_its_files_and_leaves_private_ones_out(tmp_path: Path) -> None:
    app = tmp_path / "app"
    shutil.copytree(EXAMPLE, app, ignore=shutil.ignore_patterns("__pycache__"))
    (app / "old.py").write_text("")
    (app / "key.pem").write_text("PRIVATE")
    (app / "key.pem").chmod(0o600)
    (app / "__pycache__").mkdir()
    (app / "__pycache__" / "hello.cpython-311.pyc").write_bytes(b"\0")
    output = app / "deploy"  # inside the app: never copied into itself
    export_ansible(load_spec(app / "cpsysd.toml"), output)
    files = output / "roles" / "cpsysd_hello" / "files" / "app"
    assert sorted(p.name for p in files.rglob("*")) == [
        "app.conf",
        "cpsysd.toml",
        "hello.py",
        "old.py",
    ]
    (app / "old.py").unlink()
    report = export_ansible(load_spec(app / "cpsysd.toml"), output)
    assert report.removed == [files / "old.py"]
    assert report.private == [app / "key.pem"]
    assert not (files / "old.py").exists()
    assert "PRIVATE" not in "".join(p.read_text() for p in output.rglob("*") if p.is_file())


# pyproject's run-time dependencies, as Debian 12 packages them (cheroot comes with cherrypy3).
DEBIAN_NAMES = {
    "cherrypy": "python3-cherrypy3",
    "cheroot": "python3-cherrypy3",
    "systemd-python": "python3-systemd",
    "jinja2": "python3-jinja2",
    "cryptography": "python3-cryptography",
    "typer": "python3-typer",
    "acme": "python3-acme",
}


def test_app_hosts_get_every_runtime_dependency_from_debian() -> None:
    """The role installs cpsysd's wheel with --no-index over Debian's packages: a dependency
    missing from APT_PACKAGES fails on every host at the first run."""
    import re
    import tomllib

    from cpsysd.targets.ansible import APT_PACKAGES

    project = tomllib.loads((EXAMPLE.parent.parent / "pyproject.toml").read_text())["project"]
    names = [re.split(r"[<>=!~; ]", dep, maxsplit=1)[0] for dep in project["dependencies"]]
    assert sorted(set(names)) == sorted(DEBIAN_NAMES), "map the new dependency to its package"
    assert {DEBIAN_NAMES[name] for name in names} <= set(APT_PACKAGES)


def _role_tasks(output: Path) -> dict[str, dict[str, object]]:
    """The role's app tasks by name, blocks' tasks included (Debian's python3 has PyYAML)."""
    role = next((output / "roles").iterdir())
    text = subprocess.run(
        ["/usr/bin/python3", "-c", "import json, sys, yaml; "
         "print(json.dumps(yaml.safe_load(open(sys.argv[1]))))", str(role / "tasks/main.yml")],
        capture_output=True, text=True, timeout=60, check=True,
    ).stdout  # fmt: skip
    tasks: dict[str, dict[str, object]] = {}
    for task in json.loads(text):
        tasks[task["name"]] = task
        for inner in task.get("block", []) + task.get("rescue", []):
            tasks[inner["name"]] = inner
    return tasks


def deploy_decision(tmp_path: Path, output: Path, releases: str, recorded: str | None) -> str:
    """Run the role's own decision tasks in real Ansible on the controller, with what the host
    would have answered: whether it deploys, and the record it would write after the deploy."""
    tasks = _role_tasks(output)
    block = tasks["Deploy a release and check that it answers"]
    record = tasks["Record the release and what it was made of"]["ansible.builtin.copy"]
    answers = {
        "cpsysd_releases": {"stdout": releases},
        "cpsysd_inputs": {"stdout": "sum2\n"},
        "cpsysd_record": {} if recorded is None else
        {"content": base64.b64encode(recorded.encode()).decode()},
        "cpsysd_deployed": {"stdout": "release r9 is live (replaced hello-release@r2.service)\n"},
    }  # fmt: skip
    result_file = tmp_path / "decision"
    playbook = tmp_path / "decide.yml"
    playbook.write_text(json.dumps([{
        "name": "decide", "hosts": "front1", "gather_facts": False, "connection": "local",
        "tasks": [
            tasks["Decide whether to deploy"],
            {"ansible.builtin.copy": {
                "content": "{{ " + str(block["when"]) + " }} " + str(record["content"]),
                "dest": str(result_file), "mode": "0600"}},
        ],
    }]))  # fmt: skip
    extra = tmp_path / "answers.json"
    extra.write_text(json.dumps(answers))
    result = subprocess.run(
        [str(ANSIBLE), "-i", str(output / "inventory.ini"), "-e", f"@{extra}", str(playbook)],
        capture_output=True, text=True, timeout=120, check=False, env=ansible_env(tmp_path),
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    return result_file.read_text()


@needs_ansible
def test_the_role_deploys_unless_the_live_release_is_the_recorded_one(tmp_path: Path) -> None:
    output = export(tmp_path)
    listing = "r1\t2026-12-06T04:00:00Z\t/opt/cpsysd/apps/hello\tprevious\n"
    listing += "r2\t2026-12-06T04:01:00Z\t/opt/cpsysd/apps/hello\tlive\n"
    # The recorded release is live and made of the same files: nothing to do.
    assert deploy_decision(tmp_path, output, listing, "r2 sum2") == "False r9 sum2"
    # A run copied new files and stopped before its deploy succeeded: the sum differs.
    assert deploy_decision(tmp_path, output, listing, "r2 sum1") == "True r9 sum2"
    # Someone rolled back or deployed by hand: another release is live.
    assert deploy_decision(tmp_path, output, listing.replace("live", ""), "r2 sum2").startswith(
        "True"
    )
    # First install: no release, no record.
    assert deploy_decision(tmp_path, output, "", None) == "True r9 sum2"
