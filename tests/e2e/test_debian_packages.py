"""The .deb files under a real systemd: in the ephemeral container, dpkg installs cpsysd and the
example app, upgrades them, removes and purges them, and the machine ends as it began.

(Named test_debian_packages.py, not test_debian.py: tests/test_debian.py exists and pytest's
default import mode needs distinct basenames.)
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from debkit import Debs, build_debs
from e2etools import LoadRun, greetings

from cpsysd.harness import container as harness
from cpsysd.harness.container import Container

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(os.geteuid() != 0, reason="the systemd container needs root"),
]

DEBS = "/root/cpsysd-debs"
TLS = "/var/lib/cpsysd/hello-tls"
# A file list of what packages can touch. The container is an overlay of the live host, so
# places the host itself changes meanwhile are left out: dpkg's database and logs, caches, the
# harness's scratch directories, and bytecode caches other than cpsysd's (any root process
# running Debian's python3 may write those). -H: /lib may be a symlink to usr/lib (merged /usr).
# Pruned: dpkg's, apt's and logs' own state, and what the host's daily jobs may change under
# the overlay meanwhile (apt lists, /var/backups); cpsysd writes none of them.
FILE_LIST = (
    "find -H /etc /lib /usr /var /opt /srv -xdev \\( -path /var/lib/dpkg -o -path /var/log"
    " -o -path /var/cache -o -path /var/tmp -o -path /var/lib/apt -o -path /var/backups"
    " -o -path {base} \\) -prune -o -printf '%y %p\\n'"
)


@pytest.fixture(scope="module")
def debs(tmp_path_factory: pytest.TempPathFactory) -> Debs:
    return build_debs(tmp_path_factory)


@pytest.fixture
def box(debs: Debs, container: Container) -> Container:
    container.copy_in(debs.cpsysd.parent, DEBS)
    # This image's policy-rc.d forbids starting services (exit 101), which deb-systemd-invoke
    # obeys; the container is a throw-away overlay, so remove it there. Without man-db's
    # auto-update flag its trigger skips re-indexing manual pages (80% of dpkg's time here).
    container.run(["rm", "-f", "/usr/sbin/policy-rc.d", "/var/lib/man-db/auto-update"])
    return container


def _files(box: Container) -> set[str]:
    listing = box.sh(FILE_LIST.format(base=harness.BASE)).stdout.splitlines()
    return {line for line in listing if "/__pycache__" not in line or "cpsysd" in line}


def _dpkg(box: Container, *args: str) -> str:
    result = box.run(["dpkg", *args], check=False, env={"DEBIAN_FRONTEND": "noninteractive"})
    assert result.returncode == 0, f"dpkg {' '.join(args)}:\n{result.stdout}{result.stderr}"
    return result.stdout


def _tls_digests(box: Container) -> str:
    return box.run(["sha256sum", f"{TLS}/cert.pem", f"{TLS}/key.pem"]).stdout


def _main_pid(box: Container) -> int:
    """The PID that answers: since the postinst deploys, a release unit, not hello.service."""
    return int(_answers(box)["pid"])  # type: ignore[call-overload]


def _answers(box: Container) -> dict[str, object]:
    """One request over HTTP, one over HTTPS verified against the certificate the postinst
    made (its subjectAltNames include localhost); returns the app's /whoami."""
    plain = box.run(["curl", "-sS", "--max-time", "20", "http://127.0.0.1:8080/"]).stdout
    assert plain.startswith("Hello from cpsysd!")
    secure = box.run(
        ["curl", "-sS", "--max-time", "20", "--cacert", f"{TLS}/cert.pem",
         "https://localhost:8443/whoami"]
    ).stdout  # fmt: skip
    whoami: dict[str, object] = json.loads(secure)
    assert whoami["scheme"] == "https"
    return whoami


def test_install_upgrade_remove_purge(box: Container, debs: Debs) -> None:
    cpsysd_deb, app_deb = f"{DEBS}/{debs.cpsysd.name}", f"{DEBS}/{debs.app.name}"
    before = _files(box)

    # --- install: the sockets listen, the first connection starts the hardened service ---
    _dpkg(box, "-i", cpsysd_deb, app_deb)
    for unit in ("hello.socket", "hello-https.socket"):
        assert box.run(["systemctl", "is-active", unit]).stdout.strip() == "active"
        assert box.run(["systemctl", "is-enabled", unit]).stdout.strip() == "enabled"
    whoami = _answers(box)
    assert whoami["uid"] != 0  # DynamicUser
    assert box.run(["stat", "-c", "%a", f"{TLS}/key.pem"]).stdout.strip() == "600"
    digests, first_pid = _tls_digests(box), _main_pid(box)
    created = _files(box) - before  # the list sees what purge must take away again
    for entry in (
        "f /lib/systemd/system/hello.service",
        "l /etc/systemd/system/sockets.target.wants/hello-https.socket",
        f"f {TLS}/key.pem",
        "f /var/lib/cpsysd/hello.manifest.json",
        "f /etc/cpsysd/hello.toml",
        "d /usr/lib/python3/dist-packages/cpsysd/__pycache__",
        "d /usr/share/cpsysd-hello/__pycache__",
    ):
        assert entry in created

    # --- upgrade (the same packages again): key and certificate kept, app restarted -----------
    _dpkg(box, "-i", cpsysd_deb, app_deb)
    assert _tls_digests(box) == digests
    _answers(box)
    upgraded_pid = _main_pid(box)
    assert upgraded_pid not in (0, first_pid)

    # --- cpsysd alone upgraded: its dpkg trigger rewrites the units and restarts the app -------
    output = _dpkg(box, "-i", cpsysd_deb)
    assert "Processing triggers for cpsysd-hello" in output
    _answers(box)
    assert _main_pid(box) not in (0, upgraded_pid)
    assert _tls_digests(box) == digests

    # --- remove: stopped, units gone, the port closed; TLS material kept until purge ----------
    _dpkg(box, "-r", "cpsysd-hello")
    releases = ["systemctl", "list-units", "--all", "--no-legend", "hello-release@*"]
    assert box.run(releases).stdout.strip() == ""  # the prerm stopped the live release too
    for unit in ("hello.socket", "hello-https.socket", "hello.service"):
        state = box.run(["systemctl", "is-active", unit], check=False).stdout.strip()
        assert state == "inactive", f"{unit} is {state} after dpkg -r"
    refused = box.run(["curl", "-sS", "--max-time", "5", "http://127.0.0.1:8080/"], check=False)
    assert refused.returncode == 7  # could not connect
    assert not box.sh(
        "ls /lib/systemd/system/hello* /etc/systemd/system/hello*", check=False
    ).stdout
    assert box.run(["test", "-e", "/var/lib/cpsysd/releases"], check=False).returncode == 1
    assert _tls_digests(box) == digests

    # --- purge both: no file cpsysd, its package or the app's package created is left ---------
    _dpkg(box, "--purge", "cpsysd-hello", "cpsysd")
    after = _files(box)
    assert sorted(after - before) == []
    assert sorted(before - after) == []


def _repack(deb: Path, out: Path, version: str, edit: dict[str, str]) -> Path:
    """The app's .deb as a new upstream version: ``edit`` maps files under the app's directory
    to their new text. Rebuilt with dpkg-deb itself (control Version and md5sums updated)."""
    tree = out / f"tree-{version}"
    subprocess.run(["dpkg-deb", "-R", str(deb), str(tree)], check=True, timeout=60)
    for name, text in edit.items():
        (tree / "usr/share/cpsysd-hello" / name).write_text(text)
    control = tree / "DEBIAN" / "control"
    lines = control.read_text().splitlines()
    lines = [f"Version: {version}" if line.startswith("Version:") else line for line in lines]
    control.write_text("\n".join(lines) + "\n")
    sums = subprocess.run(
        "find usr etc -type f -print0 | sort -z | xargs -0 md5sum",
        shell=True, cwd=tree, check=True, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    (tree / "DEBIAN" / "md5sums").write_text(sums.stdout)
    built = out / f"cpsysd-hello_{version}_all.deb"
    subprocess.run(["dpkg-deb", "--root-owner-group", "-b", str(tree), str(built)],
                   check=True, capture_output=True, timeout=60)  # fmt: skip
    shutil.rmtree(tree)
    return built


def _apt(box: Container, *debs: str) -> tuple[int, str]:
    """``apt-get install`` of local .deb files (every dependency is installed already)."""
    result = box.run(
        ["apt-get", "install", "-y", "-q", *debs],
        check=False, timeout=600, env={"DEBIAN_FRONTEND": "noninteractive"},
    )  # fmt: skip
    return result.returncode, result.stdout + result.stderr


def _upgrade_under_load(box: Container, deb: str) -> tuple[int, str, int]:
    """``apt install`` of ``deb`` while 4 clients loop on the app; none of their requests may
    fail, whatever apt's outcome. Returns apt's exit code, its output and the requests served."""
    loads = [LoadRun(box, 8080, "/", limit=20000, seconds=240) for _ in range(4)]
    code, output = _apt(box, deb)
    served = 0
    for count in (load.finish() for load in loads):
        assert count["failed"] == 0, count["errors"]
        served += int(count["ok"])
    return code, output, served


def test_upgrades_are_health_gated_deploys(
    box: Container, debs: Debs, tmp_path: Path, figure: Callable[[str, str], None]
) -> None:
    """v1 installs and deploys release r1; v2 under load replaces it without a failed request;
    a v3 that cannot import is refused with its cause in one line, dpkg leaves it
    half-configured, and v2 keeps answering throughout."""
    conf = '[/]\ntools.encode.on = True\n\n[hello]\ngreeting = "Version-2"\n'
    v2 = _repack(debs.app, tmp_path, "0.1.0+v2", {"app.conf": conf})
    broken = "raise ImportError('version 3 is broken')\n"
    v3 = _repack(debs.app, tmp_path, "0.1.0+v3", {"hello.py": broken})
    box.copy_in(v2, f"/root/{v2.name}")
    box.copy_in(v3, f"/root/{v3.name}")

    # --- first install: the units, the sockets, and the installed code as release r1 ----------
    code, output = _apt(box, f"{DEBS}/{debs.cpsysd.name}", f"{DEBS}/{debs.app.name}")
    assert code == 0, output
    releases = box.run(["cpsysd", "releases", "hello"]).stdout.splitlines()
    assert [line.split("\t")[0] for line in releases] == ["r1"]
    assert releases[0].endswith("\tlive")
    assert greetings(box, 30) == {"Hello"}

    # --- v1 -> v2 under load: no failed request, and only v2 answers afterwards --------------
    code, output, served = _upgrade_under_load(box, f"/root/{v2.name}")
    assert code == 0, output
    figure("requests during apt install of v2 (4 clients)", f"{served} served, 0 failed")
    assert greetings(box, 30) == {"Version-2"}
    triggers = box.run(["systemctl", "show", "-P", "Triggers", "hello.socket"]).stdout
    assert "hello-release@r2.service" in triggers

    # --- v2 -> broken v3: refused with the cause, v2 serves on ----------------------------------
    code, output, served = _upgrade_under_load(box, f"/root/{v3.name}")
    assert code != 0
    refused = [line for line in output.splitlines() if line.startswith("cpsysd-hello: ")]
    assert len(refused) == 1, output
    print(refused[0])
    figure("requests during the refused apt install of v3", f"{served} served, 0 failed")
    assert refused[0].startswith("cpsysd-hello: not configured, what was serving keeps serving: ")
    assert "version 3 is broken" in refused[0]
    status = box.run(["dpkg-query", "-W", "-f", "${Version} ${db:Status-Status}", "cpsysd-hello"])
    assert status.stdout == "0.1.0+v3 half-configured"
    assert greetings(box, 30) == {"Version-2"}
