"""The .deb files themselves: lintian-clean, the right contents, and cpsysd working with Debian's
/usr/bin/python3 and nothing but Debian's packages (bookworm: Typer 0.7, cryptography 38,
CherryPy 18.8, Jinja2 3.1, systemd-python 235)."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest
from debkit import REPO, Debs, build_debs

from cpsysd.targets.debian import GENERATED

DIST_PACKAGES = "/usr/lib/python3/dist-packages"


@pytest.fixture(scope="session")
def debs(tmp_path_factory: pytest.TempPathFactory) -> Debs:
    return build_debs(tmp_path_factory)


@pytest.fixture(scope="session")
def unpacked(debs: Debs, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The cpsysd package extracted (dpkg -x) into a scratch directory."""
    root = tmp_path_factory.mktemp("cpsysd-deb")
    subprocess.run(["dpkg-deb", "-x", str(debs.cpsysd), str(root)], check=True)
    return root


def _debian_python(unpacked: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    """Run with Debian's python3, an empty environment, the package's files first on the path
    and the user site off: only Debian's modules are importable besides cpsysd."""
    env = {
        "PATH": "/usr/bin:/bin",
        "PYTHONPATH": str(unpacked / DIST_PACKAGES.lstrip("/")),
        "LC_ALL": "C.UTF-8",
        "PYTHONNOUSERSITE": "1",
        "PYTHONDONTWRITEBYTECODE": "1",
    }
    return subprocess.run(
        # cwd: not the checkout, whose cpsysd `python3 -c` would import first.
        ["/usr/bin/python3", *argv],
        env=env,
        cwd=unpacked,
        capture_output=True,
        text=True,
        check=False,
    )


@pytest.mark.parametrize("which", ["cpsysd", "app"])
def test_lintian_has_no_errors_or_warnings(debs: Debs, which: str) -> None:
    deb = getattr(debs, which)
    result = subprocess.run(
        ["lintian", "--fail-on", "error,warning", "--display-level", ">=warning", str(deb)],
        capture_output=True,
        text=True,
        check=False,
    )
    tags = [line for line in result.stdout.splitlines() if line[:2] in ("E:", "W:")]
    assert not tags, result.stdout
    assert result.returncode == 0, result.stdout + result.stderr


def _contents(deb: Path) -> list[str]:
    listing = subprocess.run(
        ["dpkg-deb", "--fsys-tarfile", str(deb)], capture_output=True, check=True
    )
    names = subprocess.run(["tar", "-t"], input=listing.stdout, capture_output=True, check=True)
    return [name.lstrip(".") for name in names.stdout.decode().splitlines()]


def test_cpsysd_package_contents(debs: Debs) -> None:
    files = _contents(debs.cpsysd)
    package = f"{DIST_PACKAGES}/cpsysd"
    for needed in (
        "/usr/bin/cpsysd",
        f"{package}/cli/app.py",
        f"{package}/py.typed",
        f"{package}/units/service.j2",
        f"{package}/units/socket.j2",
        f"{package}/units/debian/postinst.j2",
        "/usr/share/man/man1/cpsysd.1.gz",
    ):
        assert needed in files
    assert not [f for f in files if "/tests/" in f or f.endswith(".pyc")]
    fields = subprocess.run(
        ["dpkg-deb", "-f", str(debs.cpsysd), "Depends"], capture_output=True, text=True, check=True
    ).stdout
    for package_name in (
        "python3-cherrypy3",
        "python3-systemd",
        "python3-jinja2",
        "python3-cryptography",
        "python3-typer",
        "python3-acme",
    ):
        assert package_name in fields


def test_app_package_contents_and_scripts(debs: Debs, tmp_path: Path) -> None:
    files = _contents(debs.app)
    assert "/etc/cpsysd/hello.toml" in files
    assert "/usr/share/cpsysd-hello/hello.py" in files
    control = tmp_path / "control"
    subprocess.run(["dpkg-deb", "-e", str(debs.app), str(control)], check=True)
    assert (control / "conffiles").read_text().split() == ["/etc/cpsysd/hello.toml"]
    for script in ("postinst", "prerm", "postrm"):
        text = (control / script).read_text()
        assert GENERATED in text
        assert "#DEBHELPER#" not in text  # dh_installdeb filled it in
        subprocess.run(["sh", "-n", str(control / script)], check=True)
    assert (
        "py3compile -p cpsysd-hello /usr/share/cpsysd-hello" in (control / "postinst").read_text()
    )
    assert (
        "interest-noawait /usr/lib/python3/dist-packages/cpsysd"
        in (control / "triggers").read_text()
    )
    depends = subprocess.run(
        ["dpkg-deb", "-f", str(debs.app), "Depends"], capture_output=True, text=True, check=True
    ).stdout
    assert "cpsysd (>= " in depends


def test_runs_with_debian_python_and_debian_modules_only(unpacked: Path) -> None:
    probe = (
        "import cpsysd.cli.app, typer, cherrypy, jinja2, cryptography, systemd.daemon;"
        "print(cpsysd.__file__);"
        "print(*(m.__file__ for m in (typer, cherrypy, jinja2, cryptography, systemd.daemon)));"
        "print(typer.__version__, cryptography.__version__)"
    )
    result = _debian_python(unpacked, "-c", probe)
    assert result.returncode == 0, result.stderr
    ours, theirs, versions = result.stdout.splitlines()
    assert ours.startswith(str(unpacked))
    assert all(path.startswith(DIST_PACKAGES + "/") for path in theirs.split()), theirs
    assert versions.split()[0].startswith("0.7.")  # bookworm's Typer; classic Option defaults


def test_console_script_and_every_command_help(unpacked: Path) -> None:
    script = unpacked / "usr/bin/cpsysd"
    assert script.read_text().startswith("#!/usr/bin/python3\n")
    top = _debian_python(unpacked, str(script), "--help")
    assert top.returncode == 0, top.stderr

    # Click lists the commands after "Commands:" indented by two spaces; with python3-rich
    # installed, typer 0.7 draws a "Commands" box whose rows start with "│ ". Continuation
    # lines of the help texts are indented further, so they never match.
    def listed(help_text: str) -> list[str]:
        section = help_text.split("Commands")[1]
        return re.findall(r"^(?:  |│ )([a-z][a-z-]*) ", section, re.MULTILINE)

    commands = [[name] for name in listed(top.stdout)]
    assert {"install", "generate", "debian", "cert"} <= {name for (name,) in commands}
    cert = _debian_python(unpacked, str(script), "cert", "--help")
    commands += [["cert", name] for name in listed(cert.stdout)]
    assert ["cert", "renew"] in commands
    for command in commands:
        result = _debian_python(unpacked, str(script), *command, "--help")
        assert result.returncode == 0, f"{command}: {result.stderr}"
        assert "usage:" in result.stdout.lower()  # serve's is argparse's (no Typer at start-up)
    version = _debian_python(unpacked, str(script), "--version")
    assert version.stdout.startswith("cpsysd ")


def test_commands_work_with_debian_modules(unpacked: Path, tmp_path: Path) -> None:
    """Rendering (Jinja2 3.1), TLS (cryptography 38) and cpsysd debian, for real."""
    script = str(unpacked / "usr/bin/cpsysd")
    example = REPO / "packaging" / "examples" / "hello" / "hello.toml"
    generated = _debian_python(
        unpacked, script, "generate", "-c", str(example), "-o", str(tmp_path / "units")
    )
    assert generated.returncode == 0, generated.stderr
    assert sorted(os.listdir(tmp_path / "units")) == [
        "hello-https.socket",
        "hello.service",
        "hello.socket",
    ]
    cert = _debian_python(
        unpacked,
        script,
        "cert",
        "selfsigned",
        "--cert",
        str(tmp_path / "c.pem"),
        "--key",
        str(tmp_path / "k.pem"),
        "localhost",
        "127.0.0.1",
    )
    assert cert.returncode == 0, cert.stderr
    assert oct((tmp_path / "k.pem").stat().st_mode & 0o777) == "0o600"
    check = subprocess.run(
        ["openssl", "x509", "-in", str(tmp_path / "c.pem"), "-noout", "-ext", "subjectAltName"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "DNS:localhost" in check.stdout
    assert "IP Address:127.0.0.1" in check.stdout
    debian = _debian_python(
        unpacked,
        script,
        "debian",
        "-c",
        str(example),
        "-p",
        "cpsysd-hello",
        "-o",
        str(tmp_path / "debian"),
    )
    assert debian.returncode == 0, debian.stderr
    assert (tmp_path / "debian" / "cpsysd-hello.postinst").exists()
