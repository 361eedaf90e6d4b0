"""``cpsysd debian``: the maintainer scripts it writes, checked as shell, against debhelper's own
dh_installsystemd snippets, and run through a whole package life cycle (configure twice,
triggered, remove, reinstall, purge) under ``DPKG_ROOT`` with the real deb-systemd-helper."""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from cpsysd.description.load import load_spec
from cpsysd.errors import CpsysdError, SpecError
from cpsysd.render.releases import release_template_name, render_socket_dropin, socket_dropins
from cpsysd.targets.debian import GENERATED, DebianOptions, render_debian, write_debian

REPO = Path(__file__).resolve().parent.parent
EXAMPLE_TOML = REPO / "packaging" / "examples" / "hello" / "hello.toml"
AUTOSCRIPTS = Path("/usr/share/debhelper/autoscripts")
VENV_BIN = str(Path(sys.executable).parent)
DEBIAN_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"


def _describe(tmp_path: Path, extra: str = "", **fields: str) -> Path:
    values = {
        "name": "shop",
        "entry": "shop:Root",
        "working_directory": "/usr/share/shop",
        "python": "/usr/bin/python3",
        **fields,
    }
    lines = [f'{key} = "{value}"' for key, value in values.items()]
    path = tmp_path / "shop.toml"
    path.write_text("\n".join(lines) + "\n" + extra)
    return path


@pytest.fixture
def example_scripts() -> dict[str, str]:
    return render_debian(load_spec(EXAMPLE_TOML), DebianOptions(package="cpsysd-hello"))


def test_writes_scripts_and_triggers(tmp_path: Path) -> None:
    out = tmp_path / "debian"
    written = write_debian(load_spec(EXAMPLE_TOML), DebianOptions("cpsysd-hello"), out)
    names = sorted(p.name for p in written)
    assert names == [f"cpsysd-hello.{s}" for s in ("postinst", "postrm", "prerm", "triggers")]
    for path in written:
        mode = stat.S_IMODE(path.stat().st_mode)
        assert mode == (0o644 if path.suffix == ".triggers" else 0o755), path
        assert GENERATED in path.read_text()
    triggers = (out / "cpsysd-hello.triggers").read_text()
    assert "interest-noawait /usr/lib/python3/dist-packages/cpsysd\n" in triggers


def test_scripts_are_posix_sh(tmp_path: Path, example_scripts: dict[str, str]) -> None:
    for name, text in example_scripts.items():
        if name.endswith(".triggers"):
            continue
        path = tmp_path / name
        path.write_text(text)
        assert text.startswith("#!/bin/sh\n")
        assert text.count("#DEBHELPER#") == 1, name
        subprocess.run(["sh", "-n", str(path)], check=True)
        # devscripts' checkbashisms: nothing that dash (Debian's /bin/sh) would not run.
        check = subprocess.run(["checkbashisms", str(path)], capture_output=True, text=True)
        assert check.returncode == 0, check.stdout + check.stderr


def _commands(text: str) -> list[str]:
    """Non-comment lines, whitespace-normalised, with our variable names mapped to dh's."""
    lines = []
    for line in text.splitlines():
        line = " ".join(line.split()).replace("_cpsysd_action", "_dh_action")
        if line and not line.startswith("#"):
            lines.append(line)
    return lines


def _appears_in_order(needle: list[str], haystack: list[str]) -> bool:
    position = 0
    for line in haystack:
        if position < len(needle) and line == needle[position]:
            position += 1
    return position == len(needle)


@pytest.mark.parametrize(
    ("script", "autoscript", "units"),
    [
        ("postinst", "postinst-systemd-enable", "hello.socket"),
        ("postinst", "postinst-systemd-enable", "hello-https.socket"),
        ("prerm", "prerm-systemd-restart", "hello.socket hello-https.socket hello.service"),
        ("postrm", "postrm-systemd", "hello.socket hello-https.socket"),
    ],
)
def test_follows_dh_installsystemd(
    example_scripts: dict[str, str], script: str, autoscript: str, units: str
) -> None:
    """debhelper's own snippet, units filled in, appears line by line in our script."""
    snippet = (AUTOSCRIPTS / autoscript).read_text()
    snippet = snippet.replace("#UNITFILES#", units).replace("#UNITFILE#", units)
    ours = _commands(example_scripts[f"cpsysd-hello.{script}"])
    theirs = [
        line for line in _commands(snippet) if not line.startswith('if [ "$1" = "configure" ]')
    ]
    assert _appears_in_order(theirs[:-1], ours), "\n".join(theirs)


def test_start_is_guarded_like_dh(example_scripts: dict[str, str]) -> None:
    postinst = _commands(example_scripts["cpsysd-hello.postinst"])
    guard = 'if [ -z "${DPKG_ROOT:-}" ] && [ -d /run/systemd/system ]; then'
    start = "deb-systemd-invoke start hello.socket hello-https.socket >/dev/null || true"
    # Started on first install only; an upgrade (or cpsysd's trigger) never restarts the
    # sockets, it deploys the installed code as a release behind them (health-gated).
    deploy = "if ! _cpsysd_out=$(cpsysd deploy -c /etc/cpsysd/hello.toml 2>&1 >/dev/null); then"
    assert _appears_in_order(
        [
            guard,
            "systemctl --system daemon-reload >/dev/null || true",
            'if [ -z "$2" ]; then',
            start,
            "fi",
            deploy,
        ],
        postinst,
    )
    assert "restart" not in " ".join(line for line in postinst if not line.startswith("#"))
    # Every systemctl or deb-systemd-invoke call sits inside an `if` on /run/systemd/system
    # (sd_booted(3)) and an unset DPKG_ROOT.
    for name, text in example_scripts.items():
        open_ifs: list[str] = []
        for line in _commands(text):
            if line.startswith("if "):
                open_ifs.append(line)
            elif line == "fi":
                open_ifs.pop()
            elif line.startswith(("deb-systemd-invoke", "systemctl")):
                guards = " ".join(open_ifs)
                assert "[ -d /run/systemd/system ]" in guards, f"{name}: {line}"
                assert '[ -z "${DPKG_ROOT:-}" ]' in guards, f"{name}: {line}"


def test_values_are_shell_quoted(tmp_path: Path) -> None:
    odd = "/srv/a&b|c*d(e)<f>!g#h~i"
    spec = load_spec(
        _describe(tmp_path, extra=f'[tls]\ncert = "{odd}/cert.pem"\nkey = "{odd}/key.pem"\n')
    )
    postinst = render_debian(spec, DebianOptions("shop"))["shop.postinst"]
    assert f"'{odd}/cert.pem'" in postinst
    assert f"'{odd}'" in postinst


def test_refuses_descriptions_with_build_machine_defaults(tmp_path: Path) -> None:
    path = tmp_path / "app.toml"
    path.write_text('name = "shop"\nentry = "shop:Root"\npython = "/usr/bin/python3"\n')
    with pytest.raises(SpecError, match="working_directory: is not set"):
        render_debian(load_spec(path), DebianOptions("shop"))
    path.write_text('name = "shop"\nentry = "shop:Root"\nworking_directory = "/srv/shop"\n')
    with pytest.raises(SpecError, match="python: is not set"):
        render_debian(load_spec(path), DebianOptions("shop"))


def test_refuses_bad_package_name(tmp_path: Path) -> None:
    with pytest.raises(CpsysdError, match="not a Debian package name"):
        render_debian(load_spec(_describe(tmp_path)), DebianOptions("Shop_App"))


def test_admin_units(tmp_path: Path) -> None:
    scripts = render_debian(load_spec(_describe(tmp_path)), DebianOptions("shop", vendor=False))
    assert "/etc/systemd/system/shop.service" in scripts["shop.postrm"]
    assert "/lib/systemd/system" not in scripts["shop.postrm"]
    assert "--vendor" not in scripts["shop.postinst"]


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cpsysd", "debian", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        check=False,
    )


def test_cli_writes_and_refuses_foreign_scripts(tmp_path: Path) -> None:
    spec_file = _describe(tmp_path)
    (tmp_path / "debian").mkdir()
    result = _cli("-c", str(spec_file), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "wrote debian/shop.postinst" in result.stdout
    again = _cli("-c", str(spec_file), cwd=tmp_path)  # its own files: replaced
    assert again.returncode == 0, again.stderr

    own = tmp_path / "debian" / "shop.prerm"
    own.write_text("#!/bin/sh\n# the maintainer's own\n")
    refused = _cli("-c", str(spec_file), cwd=tmp_path)
    assert refused.returncode == 1
    assert refused.stderr.startswith("cpsysd: error: ")
    assert "was not written by cpsysd debian" in refused.stderr
    assert "Traceback" not in refused.stderr
    assert own.read_text() == "#!/bin/sh\n# the maintainer's own\n"
    forced = _cli("-c", str(spec_file), "--force", "-p", "shop", cwd=tmp_path)
    assert forced.returncode == 0, forced.stderr
    assert GENERATED in own.read_text()


def test_cli_bad_description_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "app.toml"
    path.write_text('name = "shop"\nentry = "shop:Root"\n')
    result = _cli("-c", str(path), "-o", str(tmp_path / "out"), cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1
    assert "working_directory: is not set" in result.stderr
    assert not (tmp_path / "out").exists()


# --- the life cycle, run for real under DPKG_ROOT ------------------------------------------


def _snapshot(root: Path) -> dict[str, tuple[object, ...]]:
    """Every path under root: directories with their mode, links with their target, files
    with mode and sha256 (so a re-created key or certificate shows up)."""
    found: dict[str, tuple[object, ...]] = {}
    for path in sorted(root.rglob("*")):
        rel = "/" + str(path.relative_to(root))
        st = path.lstat()
        if stat.S_ISLNK(st.st_mode):
            found[rel] = ("link", os.readlink(path))
        elif stat.S_ISDIR(st.st_mode):
            found[rel] = ("dir", oct(stat.S_IMODE(st.st_mode)))
        else:
            digest = hashlib.sha256(path.read_bytes()).hexdigest()
            found[rel] = ("file", oct(stat.S_IMODE(st.st_mode)), digest)
    return found


class Package:
    """The example app's package, unpacked into a DPKG_ROOT tree, its scripts run as dpkg
    would run them (deb-systemd-helper needs DPKG_MAINTSCRIPT_PACKAGE)."""

    def __init__(self, tmp_path: Path, spec_file: Path = EXAMPLE_TOML, vendor: bool = True) -> None:
        self.root = tmp_path / "root"
        self.scripts = tmp_path / "debian"
        self.unit_dir = "/lib/systemd/system" if vendor else "/etc/systemd/system"
        spec = load_spec(spec_file)
        write_debian(spec, DebianOptions("cpsysd-hello", vendor=vendor), self.scripts)
        conffile = self.root / "etc" / "cpsysd" / f"{spec.name}.toml"
        conffile.parent.mkdir(parents=True)
        shutil.copy(spec_file, conffile)
        app = self.root / spec.working_directory.lstrip("/")
        app.mkdir(parents=True)
        shutil.copy(REPO / "examples" / "hello" / "hello.py", app)
        # What every Debian system has before this package arrives.
        for directory in ("etc/systemd/system", "lib/systemd/system", "var/lib/systemd"):
            (self.root / directory).mkdir(parents=True)
        (self.root / "lib/systemd/system/other.service").write_text(
            "[Service]\nExecStart=/bin/true\n"
        )

    def run(self, script: str, *args: str, cpsysd: bool = True) -> subprocess.CompletedProcess[str]:
        env = {
            "PATH": f"{VENV_BIN}:{DEBIAN_PATH}" if cpsysd else DEBIAN_PATH,
            "DPKG_ROOT": str(self.root),
            "DPKG_MAINTSCRIPT_PACKAGE": "cpsysd-hello",
            "DPKG_MAINTSCRIPT_NAME": script,
            "HOME": str(self.root),
            "LC_ALL": "C.UTF-8",
        }
        text = (self.scripts / f"cpsysd-hello.{script}").read_text()
        text = text.replace("#DEBHELPER#", "")  # dh_installdeb's job; empty for this app
        return subprocess.run(
            ["sh", "-e", "-c", text, script, *args], env=env, capture_output=True, text=True
        )

    def ok(self, script: str, *args: str, cpsysd: bool = True) -> None:
        result = self.run(script, *args, cpsysd=cpsysd)
        assert result.returncode == 0, f"{script} {args}: {result.stdout}{result.stderr}"


@pytest.mark.parametrize(
    ("cpsysd_at_remove", "vendor"),
    [(True, True), (False, True), (True, False)],
    ids=["cpsysd", "plain-sh", "admin-units"],
)
def test_life_cycle_under_dpkg_root(tmp_path: Path, cpsysd_at_remove: bool, vendor: bool) -> None:
    pkg = Package(tmp_path, vendor=vendor)
    before = _snapshot(pkg.root)

    pkg.ok("postinst", "configure", "")
    installed = _snapshot(pkg.root)
    new = sorted(set(installed) - set(before))
    for unit in ("hello.service", "hello.socket", "hello-https.socket"):
        assert f"{pkg.unit_dir}/{unit}" in new
    for link in ("hello.socket", "hello-https.socket"):
        target = installed[f"/etc/systemd/system/sockets.target.wants/{link}"]
        assert target == ("link", f"{pkg.unit_dir}/{link}")
    assert installed["/var/lib/cpsysd/hello-tls/key.pem"][1] == "0o600"
    assert installed["/var/lib/cpsysd/hello-tls"][1] == "0o700"
    assert "/var/lib/cpsysd/hello.manifest.json" in new

    # Re-configure, upgrade, cpsysd's trigger: nothing changes, the key least of all.
    pkg.ok("postinst", "configure", "")
    pkg.ok("postinst", "configure", "0.1.0")
    pkg.ok("postinst", "triggered", "/usr/lib/python3/dist-packages/cpsysd")
    assert _snapshot(pkg.root) == installed

    # remove: units and cpsysd's derived state go, enable links and TLS material stay.
    pkg.ok("prerm", "remove")
    (pkg.root / "usr/share/cpsysd-hello/hello.py").unlink()  # dpkg removes the package's files
    pkg.ok("postrm", "remove", cpsysd=cpsysd_at_remove)
    removed = _snapshot(pkg.root)
    assert not [p for p in removed if p.startswith(f"{pkg.unit_dir}/hello")]
    assert "/var/lib/cpsysd/hello.manifest.json" not in removed
    assert "/etc/systemd/system/sockets.target.wants/hello.socket" in removed
    assert (
        removed["/var/lib/cpsysd/hello-tls/key.pem"]
        == installed["/var/lib/cpsysd/hello-tls/key.pem"]
    )

    # Reinstall after remove: the same state as before, the same key.
    shutil.copy(REPO / "examples" / "hello" / "hello.py", pkg.root / "usr/share/cpsysd-hello")
    pkg.ok("postinst", "configure", "0.1.0")
    assert _snapshot(pkg.root) == installed

    # purge (after cpsysd itself is gone: plain sh) leaves exactly what was there before.
    pkg.ok("prerm", "remove")
    pkg.ok("postrm", "remove", cpsysd=cpsysd_at_remove)
    pkg.ok("postrm", "purge", cpsysd=False)
    assert _snapshot(pkg.root) == before


def test_purge_keeps_files_it_did_not_create(tmp_path: Path) -> None:
    pkg = Package(tmp_path)
    tls = pkg.root / "var/lib/cpsysd/hello-tls"
    pkg.ok("postinst", "configure", "")
    (tls / "notes.txt").write_text("the admin's\n")
    pkg.ok("prerm", "remove")
    pkg.ok("postrm", "remove")
    pkg.ok("postrm", "purge")
    assert sorted(p.name for p in tls.iterdir()) == ["notes.txt"]


def test_existing_tls_files_are_kept_and_never_purged(tmp_path: Path) -> None:
    pkg = Package(tmp_path)
    tls = pkg.root / "var/lib/cpsysd/hello-tls"
    tls.mkdir(parents=True)
    (tls / "cert.pem").write_text("the admin's certificate\n")
    (tls / "key.pem").write_text("the admin's key\n")
    pkg.ok("postinst", "configure", "")
    assert (tls / "key.pem").read_text() == "the admin's key\n"
    pkg.ok("prerm", "remove")
    pkg.ok("postrm", "remove")
    pkg.ok("postrm", "purge")
    assert (tls / "key.pem").read_text() == "the admin's key\n"
    assert (tls / "cert.pem").read_text() == "the admin's certificate\n"


def test_shell_metacharacters_in_paths_stay_data(tmp_path: Path) -> None:
    """Paths may contain & | * ( ) < > ! # ~ (spec.check_path refuses only what units cannot
    hold): run for real, they name files and never redirect, glob or background anything."""
    odd = "/var/lib/cpsysd/a&b|c*d(e)<f>!g#h~i"
    spec_file = tmp_path / "hello.toml"
    text = EXAMPLE_TOML.read_text().split("[tls]")[0]
    spec_file.write_text(text + f'[tls]\ncert = "{odd}/cert.pem"\nkey = "{odd}/key.pem"\n')
    pkg = Package(tmp_path, spec_file)
    before = _snapshot(pkg.root)
    pkg.ok("postinst", "configure", "")
    installed = _snapshot(pkg.root)
    created = {p for p in set(installed) - set(before) if p.startswith("/var/lib/cpsysd/")}
    assert created == {
        odd,
        f"{odd}/cert.pem",
        f"{odd}/key.pem",
        "/var/lib/cpsysd/hello.toml",
        "/var/lib/cpsysd/hello.manifest.json",
        "/var/lib/cpsysd/hello.debian-created",
    }
    assert sorted(os.listdir(tmp_path)) == ["debian", "hello.toml", "root"]
    pkg.ok("prerm", "remove")
    pkg.ok("postrm", "remove")
    pkg.ok("postrm", "purge")
    assert _snapshot(pkg.root) == before


@pytest.mark.parametrize(
    ("change", "enabled"),
    [
        ({"workers = 1": "workers = 2"}, ["multi-user.target.wants/hello.target"]),
        ({'key = "': 'renew_days = 30\nkey = "'}, ["timers.target.wants/hello-cert-renew.timer"]),
    ],
    ids=["workers", "renewal-timer"],
)
def test_other_unit_sets_install_and_purge_cleanly(
    tmp_path: Path, change: dict[str, str], enabled: list[str]
) -> None:
    """Worker template units with their target, a certificate renewal timer: whatever units
    the description makes, they are enabled, and purge takes all of them away again."""
    text = EXAMPLE_TOML.read_text().replace("watchdog_sec = 30", "watchdog_sec = 30\nworkers = 1")
    for old, new in change.items():
        assert old in text
        text = text.replace(old, new)
    spec_file = tmp_path / "hello.toml"
    spec_file.write_text(text)
    pkg = Package(tmp_path, spec_file)
    before = _snapshot(pkg.root)
    pkg.ok("postinst", "configure", "")
    installed = _snapshot(pkg.root)
    for link in enabled:
        assert installed[f"/etc/systemd/system/{link}"][0] == "link"
    pkg.ok("postinst", "configure", "0.1.0")
    assert _snapshot(pkg.root) == installed
    pkg.ok("prerm", "remove")
    pkg.ok("postrm", "remove")
    pkg.ok("postrm", "purge")
    assert _snapshot(pkg.root) == before


def test_remove_takes_what_deploy_made_and_nothing_else(tmp_path: Path) -> None:
    """The postinst deploys releases; postrm remove takes away their units, the sockets' drop-ins
    naming the live release and the releases, but not an admin's own drop-in or unit."""
    pkg = Package(tmp_path)
    pkg.ok("postinst", "configure", "")
    spec = load_spec(EXAMPLE_TOML)
    etc = pkg.root / "etc/systemd/system"
    made = [
        etc / release_template_name(spec),
        etc / "hello-release-r2@.service",  # a worker release's own template
        *(etc / dropin for dropin in socket_dropins(spec)),
    ]
    for path in made:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(render_socket_dropin(spec, "r2"))  # any text with cpsysd's marker
    release = pkg.root / "var/lib/cpsysd/releases/hello/r2/app"
    release.mkdir(parents=True)
    (release / "hello.py").write_text("")
    admins = [etc / "hello.socket.d/override.conf", etc / "hello-release-mine@.service"]
    for path in admins:
        path.write_text("[Unit]\n")

    pkg.ok("prerm", "remove")
    pkg.ok("postrm", "remove", cpsysd=False)
    assert [path for path in made if path.exists()] == []
    assert not (pkg.root / "var/lib/cpsysd/releases").exists()
    assert not (etc / "hello-https.socket.d").exists()  # emptied, so removed
    assert all(path.exists() for path in admins)
