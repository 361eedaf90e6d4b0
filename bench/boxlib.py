"""What the sections measured under a real systemd need: the harness container
(:class:`cpsysd.harness.container.Container`, torn down when the section ends, also on errors)
with this cpsysd provisioned, the example app at ``/srv/hello``, gunicorn beside it, apps
installed with ``cpsysd install``, and the PSS of units' processes read inside.

Everything runs inside the container's own namespaces; traffic stays on its loopback.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator, Sequence

from benchlib import BENCH, COMMANDS, HELLO_DIR, VENV

from cpsysd.harness.container import Container
from cpsysd.harness.provision import VENV as BOX_VENV
from cpsysd.harness.provision import provision

BOX_PYTHON = f"{BOX_VENV}/bin/python"
SYSTEM_PYTHON = "/usr/bin/python3"
WSGI_DIR = "/srv/wsgi"  # wsgi_hello.py for gunicorn, importing the app from /srv/hello
SITE = f"{BOX_VENV}/lib/python3.11/site-packages"

# A gunicorn unit the way its docs deploy one under systemd (it binds its port itself); %i is
# the port. ExecReload is gunicorn's graceful reload: SIGHUP starts new workers, then stops the
# old ones.
GUNICORN_UNIT = """\
[Unit]
Description=gunicorn serving the example app on port %i

[Service]
Type=simple
ExecStart={python} -m gunicorn -b 127.0.0.1:%i -w {workers} -k sync --chdir {wsgi_dir} \
--no-control-socket --log-level warning wsgi_hello:application
ExecReload=/bin/kill -HUP $MAINPID
KillMode=mixed
"""

# Sum of Pss (smaps_rollup) over every process in each unit's cgroup: (KiB, processes).
PSS_SCRIPT = r"""
import json, subprocess, sys
total = count = 0
for unit in sys.argv[1:]:
    group = subprocess.run(["systemctl", "show", "-P", "ControlGroup", unit],
                           capture_output=True, text=True).stdout.strip()
    if not group:
        continue
    try:
        pids = open(f"/sys/fs/cgroup{group}/cgroup.procs").read().split()
    except OSError:
        continue
    for pid in pids:
        try:
            for line in open(f"/proc/{pid}/smaps_rollup"):
                if line.startswith("Pss:"):
                    total += int(line.split()[1])
                    count += 1
        except OSError:
            pass
print(json.dumps([total, count]))
"""


@contextlib.contextmanager
def booted() -> Iterator[Container]:
    """A booted container with cpsysd provisioned, the example app and gunicorn in place; torn
    down when the block ends, also on errors."""
    with Container() as box:
        provision(box)
        box.copy_in(HELLO_DIR, "/srv/hello", exclude=["__pycache__"])
        # gunicorn (pure Python) from the bench's venv, which is made from the same
        # /usr/bin/python3 as the container's; cpsysd's provisioning leaves dev tools out.
        site = VENV / "lib" / "python3.11" / "site-packages"
        for package in ("gunicorn", "packaging"):
            box.copy_in(site / package, f"{SITE}/{package}", exclude=["__pycache__"])
        wsgi = (BENCH / "apps" / "wsgi_hello.py").read_text()
        wsgi = wsgi.replace(
            'Path(__file__).resolve().parents[2] / "examples" / "hello"', 'Path("/srv/hello")'
        )
        box.write_file(f"{WSGI_DIR}/wsgi_hello.py", wsgi)
        # Its config beside it, as in bench/apps (the same CherryPy settings as the host sections)
        conf = (BENCH / "apps" / "production" / "app.conf").read_text()
        box.write_file(f"{WSGI_DIR}/production/app.conf", conf)
        box.run(
            [
                BOX_PYTHON,
                "-m",
                "compileall",
                "-q",
                f"{SITE}/gunicorn",
                f"{SITE}/packaging",
                WSGI_DIR,
            ]
        )
        yield box


def run(box: Container, argv: Sequence[str], timeout: float = 120) -> str:
    COMMANDS.add(["(in the container)", *argv])
    return box.run(list(argv), timeout=timeout).stdout


def install(box: Container, name: str, port: int, extra: str = "") -> None:
    """``cpsysd install`` of the example app as ``name`` on ``port`` (``extra``: TOML lines)."""
    description = f"/etc/cpsysd/{name}.toml"
    box.write_file(
        description,
        f'name = "{name}"\nentry = "hello:Root"\nworking_directory = "/srv/hello"\n'
        f'config = "app.conf"\npython = "{BOX_PYTHON}"\nlisten = ["127.0.0.1:{port}"]\n'
        f"network = false\n{extra}",
    )
    run(box, [BOX_PYTHON, "-m", "cpsysd", "install", name, "-c", description], timeout=300)


def add_gunicorn(box: Container, workers: int) -> None:
    unit = GUNICORN_UNIT.format(python=BOX_PYTHON, workers=workers, wsgi_dir=WSGI_DIR)
    box.write_file("/etc/systemd/system/gunicorn@.service", unit)
    run(box, ["systemctl", "daemon-reload"])


def curl(box: Container, port: int, path: str = "/") -> tuple[int, float]:
    """One request from inside: (HTTP status, seconds to the whole answer)."""
    argv = ["curl", "-s", "-o", "/dev/null", "--max-time", "60", "-w", "%{http_code} %{time_total}"]
    out = run(box, [*argv, f"http://127.0.0.1:{port}{path}"]).split()
    return int(out[0]), float(out[1])


def wait_http(box: Container, port: int, timeout: float = 60) -> None:
    """Until ``GET /`` on ``port`` answers 200 (curl retries while nothing listens)."""
    script = (
        f"for i in $(seq {int(timeout * 10)}); do "
        f"curl -s -o /dev/null --max-time 5 http://127.0.0.1:{port}/ && exit 0; sleep 0.1; done;"
        " exit 1"
    )
    box.run(["sh", "-c", script], timeout=timeout + 30)


def pss_kib(box: Container, units: Sequence[str]) -> tuple[int, int]:
    """(PSS KiB, process count) summed over every process of ``units``."""
    out = box.run([SYSTEM_PYTHON, "-c", PSS_SCRIPT, *units], timeout=120).stdout
    total, count = json.loads(out)
    return int(total), int(count)


def active_states(box: Container, units: Sequence[str]) -> list[str]:
    out = box.run(["systemctl", "show", "-P", "ActiveState", *units], check=False).stdout
    return [line for line in out.split() if line]


def unit_names(prefix: str, count: int) -> list[str]:
    return [f"{prefix}{i:02d}" for i in range(1, count + 1)]
