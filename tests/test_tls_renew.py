"""NAME-cert-renew.timer/.service (rendered, verified by systemd-analyze) and ``cert renew``."""

from __future__ import annotations

import datetime
import os
import subprocess
import sys
from pathlib import Path

import pytest

from cpsysd import certfiles, renew, tls
from cpsysd.errors import SpecError, TLSError
from cpsysd.render import RenderOptions, render_units, units_to_enable
from cpsysd.spec import TLSConfig, parse_spec
from cpsysd.tlscert import Certificate

OPTIONS = RenderOptions("/var/lib/cpsysd/app.toml")


def spec_of(**fields: object):
    base = {"name": "app", "entry": "app:Root", "python": sys.executable, "listen": ["8443=https"]}
    return parse_spec({**base, **fields}, "/srv/app")


def directives(text: str) -> list[tuple[str, str]]:
    return [
        tuple(line.split("=", 1))
        for line in text.splitlines()  # type: ignore[misc]
        if line and not line.startswith(("#", "["))
    ]


def analyze(
    units: dict[str, str], directory: Path, *extra: str
) -> subprocess.CompletedProcess[str]:
    for name, text in units.items():
        (directory / name).write_text(text)
    return subprocess.run(
        ["systemd-analyze", *extra, "verify", *(str(directory / n) for n in units)],
        capture_output=True,
        text=True,
        check=False,
    )


TLS = {
    "cert": "/etc/cpsysd/tls/app.pem",
    "key": "/etc/cpsysd/tls/app.key",
    "renew_days": 20,
    "ca_dir": "/etc/cpsysd/ca",
    "hosts": ["app.test", "127.0.0.1"],
}


@pytest.mark.parametrize(
    ("host", "says"), [("DNS:10.0.0.1", "is an IP address"), ("a_b.test", "not a valid DNS name")]
)
def test_tls_hosts_are_checked_when_the_description_is_read(host: str, says: str) -> None:
    with pytest.raises(SpecError, match=says) as caught:
        spec_of(tls={**TLS, "hosts": ["ok.test", host]})
    assert caught.value.field == "tls.hosts[1]"


def test_no_renewal_units_without_renew_days() -> None:
    spec = spec_of(tls={"cert": "/etc/a.pem", "key": "/etc/a.key"})
    assert not [name for name in render_units(spec, OPTIONS) if "renew" in name]
    assert renew.render_renew_units(spec, OPTIONS) == {}


def test_renewal_units_verify_and_are_enabled(tmp_path: Path) -> None:
    spec = spec_of(tls=TLS)
    units = render_units(spec, OPTIONS)
    assert {"app-cert-renew.timer", "app-cert-renew.service"} <= set(units)
    assert units_to_enable(spec)[-1] == "app-cert-renew.timer"
    service = directives(units["app-cert-renew.service"])
    assert ("Type", "oneshot") in service
    assert (
        "ExecStart",
        f"{sys.executable} -m cpsysd cert renew -c /var/lib/cpsysd/app.toml",
    ) in service
    assert ("ReadWritePaths", "/etc/cpsysd/tls") in service
    assert ("ProtectSystem", "strict") in service
    assert ("ProtectHome", "yes") in service
    assert ("CapabilityBoundingSet", "") in service
    timer = directives(units["app-cert-renew.timer"])
    assert ("Persistent", "true") in timer
    assert ("WantedBy", "timers.target") in timer
    result = analyze(units, tmp_path)
    assert (result.returncode, result.stderr) == (0, "")
    security = subprocess.run(
        ["systemd-analyze", "security", "--offline=yes", str(tmp_path / "app-cert-renew.service")],
        capture_output=True,
        text=True,
        check=False,
    )
    score = float(
        security.stdout.rsplit("Overall exposure level for app-cert-renew.service: ", 1)[1].split()[
            0
        ]
    )
    print(f"app-cert-renew.service exposure {score} (runs as root: it writes root's key files)")
    assert score <= 1.0


def test_renewal_units_for_home_paths_user_mode_and_workers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home_tls = {
        **TLS,
        "cert": "/home/u/tls/app.pem",
        "key": "/home/u/tls/app.key",
        "ca_dir": "/home/u/ca",
    }
    units = render_units(spec_of(tls=home_tls), OPTIONS)
    assert ("ProtectHome", "read-only") in directives(units["app-cert-renew.service"])
    assert ("ReadWritePaths", "/home/u/tls") in directives(units["app-cert-renew.service"])
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    user = RenderOptions("/home/u/.local/state/cpsysd/app.toml", user_mode=True)
    units = render_units(spec_of(tls=home_tls), user)
    service = dict(directives(units["app-cert-renew.service"]))
    assert service["ExecStart"].endswith(
        "cert renew -c /home/u/.local/state/cpsysd/app.toml --user"
    )
    assert "ProtectSystem" not in service
    result = analyze(units, tmp_path, "--user")
    assert (result.returncode, result.stderr) == (0, "")
    workers = spec_of(tls=TLS, workers=2)
    assert renew.restart_target(workers) == "app@*.service"
    assert "app-cert-renew.timer" in render_units(workers, OPTIONS)
    assert "app-cert-renew.timer" in units_to_enable(workers)


def _tls_config(tmp_path: Path, **fields: object) -> TLSConfig:
    values: dict[str, object] = {
        "cert": str(tmp_path / "app.pem"),
        "key": str(tmp_path / "app.key"),
        "renew_days": 20,
        "hosts": ("app.test", "127.0.0.1"),
    }
    values.update(fields)
    return TLSConfig(**values)  # type: ignore[arg-type]


def _expiring(
    path: Path,
    key: Path,
    days_left: int,
    *hosts: str,
    ca: tls.CertificateAuthority | None = None,
    key_type: tls.KeyType = tls.KeyType.EC_P256,
) -> None:
    now = datetime.datetime.now(datetime.UTC)
    span = (now - datetime.timedelta(days=90 - days_left), now + datetime.timedelta(days=days_left))
    leaf = (
        ca.issue_leaf_cert(*hosts, validity=span, key_type=key_type)
        if ca
        else tls.self_signed_cert(*hosts, validity=span, key_type=key_type)
    )
    path.write_bytes(leaf.cert_pem.bytes())
    key.write_bytes(leaf.private_key_pem().bytes())
    key.chmod(0o600)


def test_renew_leaves_a_certificate_that_is_not_due(tmp_path: Path) -> None:
    config = _tls_config(tmp_path)
    _expiring(tmp_path / "app.pem", tmp_path / "app.key", 60, "app.test")
    before = (tmp_path / "app.pem").read_bytes(), (tmp_path / "app.key").read_bytes()
    renewed, report = renew.renew_certificate(config)
    assert not renewed
    assert "not due" in report
    assert ((tmp_path / "app.pem").read_bytes(), (tmp_path / "app.key").read_bytes()) == before


def test_renew_from_the_local_ca(tmp_path: Path) -> None:
    ca = certfiles.create_ca(tmp_path / "ca", tls.KeyType.EC_P256, 365)
    config = _tls_config(tmp_path, ca_dir=str(tmp_path / "ca"))
    _expiring(
        tmp_path / "app.pem",
        tmp_path / "app.key",
        5,
        "app.test",
        ca=ca,
        key_type=tls.KeyType.RSA_2048,
    )
    old_key = (tmp_path / "app.key").read_bytes()
    renewed, report = renew.renew_certificate(config)
    assert renewed
    assert report.startswith(f"renewed {tmp_path / 'app.pem'}")
    new = Certificate.list_from_pem((tmp_path / "app.pem").read_bytes())[0]
    assert new.hosts == ("DNS:app.test", "IP:127.0.0.1")  # [tls] hosts
    assert new.key_description == "RSA 2048 bits"  # the key type is kept
    assert new.lifetime_days == 90  # so is the validity period
    assert (tmp_path / "app.key").read_bytes() != old_key  # a fresh key
    assert oct((tmp_path / "app.key").stat().st_mode & 0o777) == "0o600"
    assert (tmp_path / "app.chain.pem").read_bytes() == ca.cert_pem.bytes()
    result = subprocess.run(
        [
            "openssl",
            "verify",
            "-CAfile",
            str(tmp_path / "ca/ca.pem"),
            "-purpose",
            "sslserver",
            "-verify_hostname",
            "app.test",
            str(tmp_path / "app.pem"),
        ],
        capture_output=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "app.key matches" in certfiles.check_certificate(
        tmp_path / "app.pem", tmp_path / "app.key", tmp_path / "ca/ca.pem"
    )


def test_renew_self_signed_takes_names_from_the_current_certificate(tmp_path: Path) -> None:
    config = _tls_config(tmp_path, hosts=())
    _expiring(tmp_path / "app.pem", tmp_path / "app.key", 1, "old.test", "::1")
    assert renew.renew_certificate(config)[0]
    new = Certificate.list_from_pem((tmp_path / "app.pem").read_bytes())[0]
    assert new.hosts == ("DNS:old.test", "IP:::1")
    assert new.issuer == new.subject
    (tmp_path / "app.pem").unlink()
    (tmp_path / "app.key").unlink()
    with pytest.raises(TLSError, match="no host names to renew for"):
        renew.renew_certificate(config)
    assert os.listdir(tmp_path) == []


def test_cert_renew_command(tmp_path: Path) -> None:
    description = tmp_path / "app.toml"
    description.write_text(
        'name = "app"\nentry = "app:Root"\nlisten = ["8443=https"]\n'
        f'[tls]\ncert = "{tmp_path}/app.pem"\nkey = "{tmp_path}/app.key"\nrenew_days = 30\n'
        'hosts = ["localhost"]\n'
    )
    command = [
        sys.executable,
        "-m",
        "cpsysd",
        "cert",
        "renew",
        "-c",
        str(description),
        "--no-restart",
    ]
    first = subprocess.run(command, capture_output=True, text=True, check=False)
    assert first.returncode == 0, first.stderr
    assert first.stdout.startswith(f"renewed {tmp_path}/app.pem")
    second = subprocess.run(command, capture_output=True, text=True, check=False)
    assert (second.returncode, second.stderr) == (0, "")
    assert "not due" in second.stdout
    forced = subprocess.run([*command, "--force"], capture_output=True, text=True, check=False)
    assert forced.stdout.startswith("renewed")
    no_tls = tmp_path / "plain.toml"
    no_tls.write_text('name = "plain"\nentry = "app:Root"\n')
    failed = subprocess.run(
        [*command[:-2], str(no_tls)], capture_output=True, text=True, check=False
    )
    assert failed.returncode != 0
    assert failed.stderr == f"cpsysd: error: {no_tls} has no [tls] table (nothing to renew)\n"


def test_ca_passphrase_file_needs_ca_dir() -> None:
    without_ca = {k: v for k, v in TLS.items() if k != "ca_dir"}
    with pytest.raises(SpecError) as caught:
        spec_of(tls={**without_ca, "ca_passphrase_file": "/etc/cpsysd/ca.pass"})
    assert caught.value.field == "tls.ca_passphrase_file"
    assert caught.value.one_line() == (
        "tls.ca_passphrase_file: unlocks the key of a local CA, but there is no ca_dir "
        '(add ca_dir = "/etc/cpsysd/ca" (the CA whose key it unlocks), or remove it)'
    )
    with pytest.raises(SpecError, match="contains ' '") as caught:
        spec_of(tls={**TLS, "ca_passphrase_file": "/etc/a b"})
    assert caught.value.field == "tls.ca_passphrase_file"
