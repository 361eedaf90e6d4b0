"""NAME-cert-renew.timer/.service (rendered, verified by systemd-analyze) and ``cert renew``."""

from __future__ import annotations

import datetime
import os
import subprocess
import sys
from pathlib import Path

import pytest

from cpsysd.description.load import TLSConfig, parse_spec
from cpsysd.errors import SpecError, TLSError
from cpsysd.host import renew
from cpsysd.render import renew as render_renew
from cpsysd.render.units import RenderOptions, render_units, units_to_enable
from cpsysd.tls import certfiles
from cpsysd.tls import pki as tls
from cpsysd.tls.x509 import Certificate

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
    assert render_renew.render_renew_units(spec, OPTIONS) == {}


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
    assert render_renew.restart_target(workers) == "app@*.service"
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


# --- encrypted keys: the renewed key stays encrypted, an encrypted CA key can be used ------------

KEY_PASSPHRASE = b"renewal keeps this key locked 5e1d"
CA_PASSPHRASE = b"the local CA's own secret 77b0"


def _openssl_opens(key: Path, passphrase_file: Path | None) -> bool:
    argv = ["openssl", "pkey", "-in", str(key), "-noout"]
    argv += ["-passin", f"file:{passphrase_file}" if passphrase_file else "pass:"]
    return subprocess.run(argv, capture_output=True, check=False).returncode == 0


def _assert_locked(key: Path, passphrase: Path) -> None:
    """The key is encrypted with exactly the passphrase in ``passphrase`` (as cryptography and
    openssl read it), and mode 0600."""
    data = key.read_bytes()
    assert data.startswith(b"-----BEGIN ENCRYPTED PRIVATE KEY-----")
    with pytest.raises(TLSError, match="the private key is encrypted"):
        tls.PrivateKey.from_pem(data)
    with pytest.raises(TLSError, match="wrong passphrase"):
        tls.PrivateKey.from_pem(data, b"not the passphrase")
    tls.PrivateKey.from_pem(data, passphrase.read_bytes().removesuffix(b"\n"))
    assert _openssl_opens(key, passphrase)
    assert not _openssl_opens(key, None)
    assert key.stat().st_mode & 0o777 == 0o600


def _secret_file(path: Path, secret: bytes) -> Path:
    path.touch(mode=0o600)
    path.write_bytes(secret + b"\n")
    return path


def _locked_pair(
    tmp_path: Path, days_left: int, ca: tls.CertificateAuthority | None = None
) -> None:
    """app.pem expiring in ``days_left`` days, app.key encrypted with KEY_PASSPHRASE."""
    _expiring(tmp_path / "app.pem", tmp_path / "app.key", days_left, "app.test", ca=ca)
    key = tls.PrivateKey.from_pem((tmp_path / "app.key").read_bytes())
    (tmp_path / "app.key").write_bytes(key.pem(KEY_PASSPHRASE).bytes())


def _encrypted_ca(tmp_path: Path) -> tls.CertificateAuthority:
    return certfiles.create_ca(tmp_path / "ca", tls.KeyType.EC_P256, 365, CA_PASSPHRASE)


def test_renew_keeps_the_self_signed_key_encrypted(tmp_path: Path) -> None:
    phrase = _secret_file(tmp_path / "key.pass", KEY_PASSPHRASE)
    config = _tls_config(tmp_path, passphrase_file=str(phrase))
    _locked_pair(tmp_path, 5)
    old = (tmp_path / "app.key").read_bytes()
    assert renew.renew_certificate(config)[0]
    assert (tmp_path / "app.key").read_bytes() != old
    _assert_locked(tmp_path / "app.key", phrase)
    assert "app.key matches" in certfiles.check_certificate(
        tmp_path / "app.pem", tmp_path / "app.key", passphrase=KEY_PASSPHRASE
    )
    # Not due now; with the passphrase it can tell that key and certificate still match.
    renewed, report = renew.renew_certificate(config)
    assert (renewed, "not due" in report) == (False, True)


def test_renew_from_a_ca_with_an_encrypted_key(tmp_path: Path) -> None:
    ca = _encrypted_ca(tmp_path)
    phrase = _secret_file(tmp_path / "key.pass", KEY_PASSPHRASE)
    ca_phrase = _secret_file(tmp_path / "ca.pass", CA_PASSPHRASE)
    _locked_pair(tmp_path, 5, ca=ca)
    config = _tls_config(
        tmp_path,
        ca_dir=str(tmp_path / "ca"),
        passphrase_file=str(phrase),
        ca_passphrase_file=str(ca_phrase),
    )
    renewed, report = renew.renew_certificate(config)
    assert renewed, report
    _assert_locked(tmp_path / "app.key", phrase)
    assert "chain verifies" in certfiles.check_certificate(
        tmp_path / "app.pem",
        tmp_path / "app.key",
        tmp_path / "ca/ca.pem",
        passphrase=KEY_PASSPHRASE,
    )
    _assert_locked(tmp_path / "ca/ca.key", ca_phrase)  # the CA's key is read, never rewritten


def test_under_the_unit_the_passphrases_come_from_credentials(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """In NAME-cert-renew.service the passphrases are the LoadCredential= copies; the files the
    description names need not be visible to the sandboxed job at all."""
    ca = _encrypted_ca(tmp_path)
    credentials = tmp_path / "credentials"
    credentials.mkdir()
    phrase = _secret_file(credentials / "tls-key-passphrase", KEY_PASSPHRASE)
    _secret_file(credentials / "tls-ca-passphrase", CA_PASSPHRASE)
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(credentials))
    _locked_pair(tmp_path, 5, ca=ca)
    hidden = str(tmp_path / "hidden" / "pass")  # does not exist
    config = _tls_config(
        tmp_path, ca_dir=str(tmp_path / "ca"), passphrase_file=hidden, ca_passphrase_file=hidden
    )
    assert renew.renew_certificate(config)[0]
    _assert_locked(tmp_path / "app.key", phrase)
    monkeypatch.delenv("CREDENTIALS_DIRECTORY")  # by hand: the files, which are missing here
    with pytest.raises(TLSError, match=r"passphrase file .*hidden/pass does not exist"):
        renew.renew_certificate(config, force=True)


def _files(tmp_path: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(tmp_path.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("force", [False, True])
def test_an_encrypted_key_without_its_passphrase_is_refused(tmp_path: Path, force: bool) -> None:
    _locked_pair(tmp_path, 5)
    before = _files(tmp_path)
    with pytest.raises(TLSError) as caught:
        renew.renew_certificate(_tls_config(tmp_path), force=force)
    line = caught.value.one_line()
    assert "app.key is encrypted, and a renewal would write the new key unencrypted" in line
    assert "set [tls] passphrase_file" in line
    assert _files(tmp_path) == before


def test_an_encrypted_ca_key_without_its_passphrase_is_refused(tmp_path: Path) -> None:
    ca = _encrypted_ca(tmp_path)
    _expiring(tmp_path / "app.pem", tmp_path / "app.key", 50, "app.test", ca=ca)
    wrong = _secret_file(tmp_path / "wrong.pass", b"not the CA passphrase")
    before = _files(tmp_path)
    config = _tls_config(tmp_path, ca_dir=str(tmp_path / "ca"))
    with pytest.raises(TLSError) as caught:  # refused while not due yet: the timer fails early
        renew.renew_certificate(config)
    assert caught.value.one_line() == (
        f"the CA key {tmp_path}/ca/ca.key is encrypted "
        "(set [tls] ca_passphrase_file to the file holding its passphrase)"
    )
    config = _tls_config(tmp_path, ca_dir=str(tmp_path / "ca"), ca_passphrase_file=str(wrong))
    with pytest.raises(TLSError, match="wrong passphrase") as caught:
        renew.renew_certificate(config, force=True)
    assert b"not the CA" not in caught.value.one_line().encode()
    assert _files(tmp_path) == before


@pytest.mark.parametrize("ending", [b"", b"\n", b"\r\n", b"\n\n"])
def test_the_app_opens_the_renewed_key_with_the_same_passphrase_file(
    tmp_path: Path, ending: bytes
) -> None:
    """`cert renew` and `cpsysd serve` read a passphrase file the same way (one trailing line
    break dropped, whatever else it holds kept): the renewed key opens in the app's TLS set-up
    with the very file it was renewed with, also outside systemd (no credentials)."""
    from cpsysd.runtime import tls as runtime_tls

    phrase = tmp_path / "key.pass"
    phrase.write_bytes(KEY_PASSPHRASE + ending)
    _locked_pair(tmp_path, 5)
    key = tls.PrivateKey.from_pem((tmp_path / "app.key").read_bytes(), KEY_PASSPHRASE)
    kept = KEY_PASSPHRASE + ending.removesuffix(b"\n").removesuffix(b"\r")
    (tmp_path / "app.key").write_bytes(key.pem(kept).bytes())
    config = _tls_config(tmp_path, passphrase_file=str(phrase))
    renewed, _ = renew.renew_certificate(config)
    assert renewed
    files = runtime_tls.tls_files(config)
    assert files.passphrase == str(phrase)
    assert not files.from_credentials
    runtime_tls.server_context(files)  # raises TLSError on a wrong passphrase
    tls.PrivateKey.from_pem((tmp_path / "app.key").read_bytes(), kept)


def test_the_renewal_service_gets_the_passphrases_as_credentials(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    locked = {**TLS, "passphrase_file": "/etc/cpsysd/tls/app.pass", "ca_passphrase_file": "ca.pass"}
    spec = spec_of(tls=locked)
    assert spec.tls is not None
    assert spec.tls.ca_passphrase_file == "/srv/app/ca.pass"
    units = render_units(spec, OPTIONS)
    renewal = directives(units["app-cert-renew.service"])
    assert [value for key, value in renewal if key == "LoadCredential"] == [
        "tls-key-passphrase:/etc/cpsysd/tls/app.pass",
        "tls-ca-passphrase:/srv/app/ca.pass",
    ]
    assert not [key for key, _ in renewal if key.startswith("Environment")]
    assert ("ExecStart", f"{sys.executable} -m cpsysd cert renew -c /var/lib/cpsysd/app.toml") in (
        renewal
    )
    app = [value for key, value in directives(units["app.service"]) if key == "LoadCredential"]
    assert "tls-key-passphrase:/etc/cpsysd/tls/app.pass" in app
    assert not [value for value in app if "ca" in value.split(":", 1)[0]]  # the app never
    result = analyze(units, tmp_path)
    assert (result.returncode, result.stderr) == (0, "")
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    user_units = render_units(spec, RenderOptions("/home/u/.local/state/cpsysd/app.toml", True))
    assert (
        directives(user_units["app-cert-renew.service"]).count(
            ("LoadCredential", "tls-ca-passphrase:/srv/app/ca.pass")
        )
        == 1
    )
    (tmp_path / "user").mkdir()
    result = analyze(user_units, tmp_path / "user", "--user")
    assert (result.returncode, result.stderr) == (0, "")
    plain = render_units(spec_of(tls=TLS), OPTIONS)["app-cert-renew.service"]
    assert "LoadCredential" not in dict(directives(plain))


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


def test_cert_renew_command_with_encrypted_key_and_ca(tmp_path: Path) -> None:
    ca = _encrypted_ca(tmp_path)
    _secret_file(tmp_path / "key.pass", KEY_PASSPHRASE)
    _secret_file(tmp_path / "ca" / "pass", CA_PASSPHRASE)
    _locked_pair(tmp_path, 3, ca=ca)
    description = tmp_path / "app.toml"
    description.write_text(
        'name = "app"\nentry = "app:Root"\nlisten = ["8443=https"]\n'
        '[tls]\ncert = "app.pem"\nkey = "app.key"\nrenew_days = 30\nhosts = ["localhost"]\n'
        'ca_dir = "ca"\npassphrase_file = "key.pass"\nca_passphrase_file = "ca/pass"\n'
    )
    command = [sys.executable, "-m", "cpsysd", "cert", "renew", "-c", str(description)]
    done = subprocess.run([*command, "--no-restart"], capture_output=True, check=False)
    assert (done.returncode, done.stderr) == (0, b""), done.stderr
    assert done.stdout.startswith(f"renewed {tmp_path}/app.pem".encode())
    _assert_locked(tmp_path / "app.key", tmp_path / "key.pass")
    for secret in (KEY_PASSPHRASE, CA_PASSPHRASE):
        assert secret not in done.stdout
