"""Day-one operations under a real systemd: a Django project installed with ``cpsysd install``,
migrated and given a superuser with ``cpsysd run`` as the service's dynamic user, then an admin
login that writes its session to the database in the state directory; ``cpsysd status`` and
``cpsysd logs`` over the three instances of a ``workers = 3`` app."""

from __future__ import annotations

import importlib.metadata as metadata
import json
import shlex
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from e2etools import curl, example_spec, install_app, prepare_app

from cpsysd.description.load import Listener, TLSConfig, parse_spec
from cpsysd.harness.container import Container
from cpsysd.harness.provision import VENV
from cpsysd.tls.pki import CertificateAuthority

pytestmark = pytest.mark.e2e

SETTINGS = """
# cpsysd: the database and collected static files live in the service's state directory
# (StateDirectory=, systemd passes its path as $STATE_DIRECTORY); the rest is read-only there.
import os

_STATE = Path(os.environ.get("STATE_DIRECTORY", BASE_DIR))
DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": _STATE / "db.sqlite3"}}
STATIC_ROOT = _STATE / "static"
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
DEBUG = False
"""

# Inside the container, with Debian's python3: GET the login page for the CSRF cookie, POST the
# form with it; print the POST's status and Location (redirects are not followed).
LOGIN = r"""
import http.client, json, re, sys, urllib.parse
c = http.client.HTTPConnection("127.0.0.1", 8000, timeout=60)
c.request("GET", "/admin/login/?next=/admin/")
r = c.getresponse(); page = r.read().decode()
cookie = next(v for k, v in r.getheaders()
              if k.lower() == "set-cookie" and v.startswith("csrftoken="))
token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page).group(1)
form = urllib.parse.urlencode({"csrfmiddlewaretoken": token, "username": "admin",
                               "password": sys.argv[1], "next": "/admin/"})
c.request("POST", "/admin/login/?next=/admin/", body=form, headers={
    "Cookie": cookie.split(";")[0], "Content-Type": "application/x-www-form-urlencoded"})
r = c.getresponse(); r.read()
print(json.dumps([r.status, r.getheader("Location"), r.getheader("Set-Cookie") or ""]))
"""


def _start_project(tmp_path: Path) -> Path:
    project = tmp_path / "mysite"
    project.mkdir()
    subprocess.run(
        [sys.executable, "-m", "django", "startproject", "mysite", str(project)], check=True
    )
    settings = project / "mysite" / "settings.py"
    settings.write_text(settings.read_text() + SETTINGS)
    return project


def _copy_django(box: Container) -> None:
    """Django and what it needs, into the container's virtualenv (the dev extras have them)."""
    site = f"{VENV}/lib/python3.11/site-packages"
    for name in ("django", "asgiref", "sqlparse"):
        package = Path(str(metadata.distribution(name).locate_file(name)))
        box.copy_in(package, f"{site}/{name}", exclude=["__pycache__"])


def _service_uid(box: Container, unit: str) -> int:
    pid = box.run(["systemctl", "show", "-p", "MainPID", "--value", unit]).stdout.strip()
    status = box.read_file(f"/proc/{pid}/status")
    return int(next(line for line in status.splitlines() if line.startswith("Uid:")).split()[1])


def test_django_migrate_createsuperuser_and_admin_login(
    container: Container, tmp_path: Path, figure: Callable[[str, str], None]
) -> None:
    pytest.importorskip("django")
    project = _start_project(tmp_path)
    spec = parse_spec(
        {
            "name": "mysite",
            "entry": "mysite.wsgi:application",
            "python": sys.executable,
            "listen": ["8000"],
            "network": False,
            "state_directory": True,
        },
        str(project),
    )
    install = prepare_app(container, spec, source=project)  # provisions VENV
    _copy_django(container)
    container.run(install)
    python = install[0]

    def cpsysd_run(
        *command: str, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        argv = [python, "-m", "cpsysd", "run", "mysite"]
        argv += [f"--setenv={name}" for name in env or {}]
        result = container.run([*argv, "--", *command], env=env, check=False, timeout=300)
        print(result.stdout, result.stderr)
        return result

    # Before the migration the service already runs as its dynamic user (the page needs no
    # table); the one-off must join that user, or the database would not be the service's.
    assert curl(container, "http://127.0.0.1:8000/admin/login/")[0] == 200
    service_uid = _service_uid(container, "mysite.service")

    started = time.monotonic()
    migrate = cpsysd_run("python", "manage.py", "migrate", "--noinput")
    figure(
        "cpsysd run manage.py migrate (Django, 18 migrations)",
        f"{time.monotonic() - started:.1f} s",
    )
    assert migrate.returncode == 0
    assert "Applying auth.0001_initial... OK" in migrate.stdout
    db = "/var/lib/private/mysite/db.sqlite3"
    assert int(container.run(["stat", "-c", "%u", db]).stdout) == service_uid

    password = "e2e-Secret-9"
    env = {
        "DJANGO_SUPERUSER_USERNAME": "admin",
        "DJANGO_SUPERUSER_EMAIL": "admin@example.com",
        "DJANGO_SUPERUSER_PASSWORD": password,
    }
    created = cpsysd_run("python", "manage.py", "createsuperuser", "--noinput", env=env)
    assert created.returncode == 0, created.stderr
    assert password not in container.run(["journalctl", "--no-pager"]).stdout

    static = cpsysd_run("python", "manage.py", "collectstatic", "--noinput")
    assert static.returncode == 0
    container.run(["test", "-s", "/var/lib/mysite/static/admin/css/base.css"])

    # the same sandbox and state, the command's own exit status
    probe = (
        "import os, sys; print(os.getuid(), os.getcwd(), os.environ['STATE_DIRECTORY']);"
        " open('/usr/x', 'w')"
    )
    seen = cpsysd_run("python", "-c", probe)
    assert seen.returncode == 1
    assert seen.stdout.split() == [str(service_uid), "/srv/mysite", "/var/lib/mysite"]
    assert "Read-only file system" in seen.stderr
    assert cpsysd_run("python", "-c", "raise SystemExit(7)").returncode == 7
    # with a terminal attached (script(1) gives it one) the command gets a terminal of its own
    # (--pty: /dev/tty opens, a controlling terminal), not just the caller's file descriptors
    tty_probe = (
        "import os\ntry: open('/dev/tty'); t = 'ctty'\nexcept OSError: t = 'none'\n"
        "print(t, os.getuid())"
    )
    run_argv = [python, "-m", "cpsysd", "run", "mysite", "--", "python", "-c", tty_probe]
    on_tty = container.run(["script", "-qec", shlex.join(run_argv), "/dev/null"], timeout=120)
    terminal, uid = on_tty.stdout.split()[-2:]
    assert terminal.endswith("ctty")  # after the terminal's echo of control characters, if any
    assert uid == str(service_uid)
    assert cpsysd_run("python", "-c", tty_probe).stdout.split()[0] == "none"  # no terminal: --pipe

    status, location, cookie = json.loads(
        container.run(["/usr/bin/python3", "-c", LOGIN, password]).stdout
    )
    assert (status, location) == (302, "/admin/")  # 200 = wrong password, 500 = read-only db
    assert "sessionid=" in cookie  # the session row was written to the database


WORKERS = 3


def test_status_and_logs_show_every_instance(container: Container) -> None:
    python = install_app(container, example_spec(workers=WORKERS))
    instances = [f"hello@{i}.service" for i in range(1, WORKERS + 1)]
    # New connections spread over the instances (SO_REUSEPORT hashes the source port).
    for _ in range(60):
        assert curl(container, "http://127.0.0.1:8080/", "-A", "ops-e2e")[0] == 200
    for unit in instances:
        assert container.wait_settled(unit) == "active/running"

    status = container.run([python, "-m", "cpsysd", "status", "hello"], check=False)
    print(status.stdout, status.stderr)
    assert status.returncode == 0
    for unit in [*instances, *(f"hello@{i}.socket" for i in range(1, WORKERS + 1))]:
        assert any(
            line.startswith(f"* {unit}: active (running)") for line in status.stdout.splitlines()
        )
    assert status.stdout.count(", restarts 0") == WORKERS
    assert "hello.target" in status.stdout

    logs = container.run([python, "-m", "cpsysd", "logs", "hello", "-n", "1000"])
    print(logs.stdout)
    access = [line for line in logs.stdout.splitlines() if 'agent="ops-e2e"' in line]
    assert {line.split()[1].partition("[")[0] for line in access} == set(instances)
    assert all('"GET / HTTP/1.1" 200' in line for line in access)
    assert any(" hello@1.socket: " in line for line in logs.stdout.splitlines())

    # -f follows: a request made after it started shows up; ^C ends it and its journalctl
    follow = container.sh(
        "(sleep 3; curl -s -A follow-e2e http://127.0.0.1:8080/ >/dev/null) & "
        f"timeout --preserve-status -s INT 8 {python} -m cpsysd logs hello -f -n 0; echo exit=$?",
        timeout=60,
    )
    print(follow.stdout, follow.stderr)
    assert any('agent="follow-e2e"' in line for line in follow.stdout.splitlines())
    assert follow.stdout.splitlines()[-1] == "exit=130"
    assert "journalctl" not in container.run(["ps", "-eo", "comm"]).stdout

    # an instance that fails makes status fail, and shows why (a runtime drop-in breaks it)
    container.write_file(
        "/run/systemd/system/hello@3.service.d/broken.conf",
        "[Service]\nExecStart=\nExecStart=/bin/sh -c 'echo broken-on-purpose >&2; exit 3'\n"
        "Restart=no\n",
    )
    container.run(["systemctl", "daemon-reload"])
    container.run(["systemctl", "restart", "hello@3.service"], check=False)
    assert container.wait_settled("hello@3.service") == "failed/failed"
    failed = container.run([python, "-m", "cpsysd", "status", "hello"], check=False)
    print(failed.stdout)
    assert failed.returncode == 1
    assert "x hello@3.service: failed (failed), result exit-code" in failed.stdout
    assert "broken-on-purpose" in failed.stdout  # the failed unit's last journal lines
    assert failed.stdout.splitlines()[-1] == "hello: 7 units, 1 failed"


def test_run_gets_the_service_credentials_not_the_files(container: Container) -> None:
    """LoadCredential= comes along: the one-off reads the key from $CREDENTIALS_DIRECTORY, as
    the service does, while the root-owned 0600 file itself stays closed to it."""
    ca = CertificateAuthority.create()
    leaf = ca.issue_leaf_cert("localhost", "127.0.0.1")
    container.write_file("/etc/cpsysd/tls/hello.crt", leaf.cert_pem.bytes().decode())
    key = leaf.private_key_pem().bytes().decode()
    container.write_file("/etc/cpsysd/tls/hello.key", key, 0o600)
    tls = TLSConfig(cert="/etc/cpsysd/tls/hello.crt", key="/etc/cpsysd/tls/hello.key")
    python = install_app(
        container, example_spec(listeners=(Listener("https", True, port=8443),), tls=tls)
    )
    probe = (
        "import os\n"
        "d = os.environ['CREDENTIALS_DIRECTORY']\n"
        "print(sorted(os.listdir(d)), open(d + '/tls-key').read().startswith('-----BEGIN'))\n"
        "open('/etc/cpsysd/tls/hello.key')\n"
    )
    argv = [python, "-m", "cpsysd", "run", "hello", "--", "python", "-c", probe]
    result = container.run(argv, check=False)
    print(result.stdout, result.stderr)
    assert result.stdout.strip() == "['tls-cert', 'tls-key'] True"
    assert "PermissionError" in result.stderr
    assert result.returncode == 1
