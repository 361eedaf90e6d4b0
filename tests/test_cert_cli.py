"""``cpsysd cert ...`` run as the real command (a subprocess of this checkout's interpreter):
outputs checked with openssl, bad input answered by one line on stderr and no file written."""

from __future__ import annotations

import datetime
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from cpsysd.tls import pki as tls

REPO = Path(__file__).resolve().parent.parent


def cert(
    args: list[str], cwd: Path, env: dict[str, str] | None = None, python: str = sys.executable
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [python, "-m", "cpsysd", "cert", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
        env={**os.environ, **(env or {})},
    )


def ok(args: list[str], cwd: Path, **kwargs: object) -> str:
    result = cert(args, cwd, **kwargs)  # type: ignore[arg-type]
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    return result.stdout


def openssl(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True, check=False)


def listing(directory: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(directory)): p.read_bytes() if p.is_file() else b"<dir>"
        for p in sorted(directory.rglob("*"))
    }


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_help_texts(tmp_path: Path) -> None:
    top = ok(["--help"], tmp_path)
    for command in ("selfsigned", "ca", "issue", "csr", "show", "check", "renew"):
        assert command in top
        text = ok([command, "--help"], tmp_path)
        assert "Usage: cpsysd cert " + command in text
    assert "--passphrase-credential" in ok(["issue", "--help"], tmp_path)
    assert "--days" in ok(["check", "--help"], tmp_path)


def test_selfsigned(tmp_path: Path) -> None:
    out = ok(
        [
            "selfsigned",
            "--cert",
            "c.pem",
            "--key",
            "k.pem",
            "--days",
            "90",
            "localhost",
            "127.0.0.1",
            "::1",
        ],
        tmp_path,
    )
    assert "wrote k.pem (EC secp256r1, mode 0600)" in out
    assert "BEGIN" not in out  # never key material
    assert (mode(tmp_path / "k.pem"), mode(tmp_path / "c.pem")) == (0o600, 0o644)
    for check in (
        ["-verify_hostname", "localhost"],
        ["-verify_ip", "127.0.0.1"],
        ["-verify_ip", "::1"],
    ):
        result = openssl(
            "verify", "-CAfile", "c.pem", "-purpose", "sslserver", *check, "c.pem", cwd=tmp_path
        )
        assert result.returncode == 0, result.stderr
    pub_key = openssl("pkey", "-in", "k.pem", "-pubout", cwd=tmp_path).stdout
    assert pub_key
    assert pub_key == openssl("x509", "-in", "c.pem", "-noout", "-pubkey", cwd=tmp_path).stdout
    enddate = openssl("x509", "-in", "c.pem", "-noout", "-enddate", cwd=tmp_path).stdout
    expires = datetime.datetime.strptime(enddate.strip().split("=", 1)[1], "%b %d %H:%M:%S %Y %Z")
    assert 89 <= (expires - datetime.datetime.utcnow()).days <= 90


def test_ca_issue_chain_and_openssl_verify(tmp_path: Path) -> None:
    ok(["ca", "--dir", "ca", "--key-type", "ec-p384"], tmp_path)
    assert (mode(tmp_path / "ca"), mode(tmp_path / "ca/ca.key"), mode(tmp_path / "ca/ca.pem")) == (
        0o700,
        0o600,
        0o644,
    )
    out = ok(
        [
            "issue",
            "--ca",
            "ca",
            "--cert",
            "leaf.pem",
            "--key",
            "leaf.key",
            "--key-type",
            "rsa-3072",
            "app.test",
            "10.1.2.3",
        ],
        tmp_path,
    )
    assert "wrote leaf.chain.pem" in out
    assert (tmp_path / "leaf.chain.pem").read_bytes() == (tmp_path / "ca/ca.pem").read_bytes()
    result = openssl(
        "verify",
        "-CAfile",
        "ca/ca.pem",
        "-purpose",
        "sslserver",
        "-verify_hostname",
        "app.test",
        "leaf.pem",
        cwd=tmp_path,
    )
    assert (result.returncode, result.stdout.strip()) == (0, "leaf.pem: OK"), result.stderr
    result = openssl(
        "verify",
        "-CAfile",
        "ca/ca.pem",
        "-purpose",
        "sslserver",
        "-verify_ip",
        "10.1.2.3",
        "leaf.pem",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    text = openssl("x509", "-in", "leaf.pem", "-noout", "-text", cwd=tmp_path).stdout
    assert "DNS:app.test, IP Address:10.1.2.3" in text
    assert "Public-Key: (3072 bit)" in text
    assert "TLS Web Server Authentication" in text
    # created once: a second `cert ca` refuses, and leaves the CA alone
    before = listing(tmp_path)
    result = cert(["ca", "--dir", "ca"], tmp_path)
    assert result.returncode != 0
    assert "a CA already exists" in result.stderr
    assert listing(tmp_path) == before
    # a second issue with another chain location
    ok(
        [
            "issue",
            "--ca",
            "ca",
            "--cert",
            "b.pem",
            "--key",
            "b.key",
            "--chain",
            "bundle.pem",
            "b.test",
        ],
        tmp_path,
    )
    assert (tmp_path / "bundle.pem").exists()
    assert not (tmp_path / "b.chain.pem").exists()


def test_csr_creates_or_reuses_the_key(tmp_path: Path) -> None:
    out = ok(
        ["csr", "--key", "k.pem", "--out", "r.csr", "example.org", "www.example.org"], tmp_path
    )
    assert "new key" in out
    key_before = (tmp_path / "k.pem").read_bytes()
    ok(["csr", "--key", "k.pem", "--out", "r2.csr", "example.org"], tmp_path)
    assert (tmp_path / "k.pem").read_bytes() == key_before  # reused, never replaced
    for request in ("r.csr", "r2.csr"):
        result = openssl("req", "-in", request, "-verify", "-noout", "-pubkey", cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        assert result.stdout == openssl("pkey", "-in", "k.pem", "-pubout", cwd=tmp_path).stdout
    text = openssl("req", "-in", "r.csr", "-noout", "-text", cwd=tmp_path).stdout
    assert "DNS:example.org, DNS:www.example.org" in text


def test_show(tmp_path: Path) -> None:
    ok(["ca", "--dir", "ca", "--name", "Test CA"], tmp_path)
    ok(
        [
            "issue",
            "--ca",
            "ca",
            "--cert",
            "c.pem",
            "--key",
            "k.pem",
            "--key-type",
            "rsa-2048",
            "app.test",
            "::1",
        ],
        tmp_path,
    )
    out = ok(["show", "c.pem"], tmp_path)
    fingerprint = openssl(
        "x509", "-in", "c.pem", "-noout", "-fingerprint", "-sha256", cwd=tmp_path
    ).stdout
    assert fingerprint.strip().split("=", 1)[1] in out
    assert "subject:     CN=app.test,O=cpsysd" in out
    assert "names:       DNS:app.test, IP:::1" in out
    assert "issuer:      CN=Test CA,O=cpsysd" in out
    assert "key type:    RSA 2048 bits" in out
    assert "(364 days left)" in out or "(365 days left)" in out
    assert "CA:          no" in out
    both = ok(["show", "c.chain.pem"], tmp_path)
    assert "(self-signed)" in both
    assert "CA:          yes" in both
    result = cert(["show", "k.pem"], tmp_path)
    assert result.returncode != 0
    assert (
        result.stderr
        == "cpsysd: error: k.pem is a private key, not a certificate (give the certificate file)\n"
    )
    assert "PRIVATE" not in result.stdout + result.stderr


def test_check(tmp_path: Path) -> None:
    ok(["ca", "--dir", "ca"], tmp_path)
    ok(
        ["issue", "--ca", "ca", "--cert", "c.pem", "--key", "k.pem", "--days", "60", "localhost"],
        tmp_path,
    )
    ok(["selfsigned", "--cert", "other.pem", "--key", "other.key", "localhost"], tmp_path)
    out = ok(["check", "c.pem", "--key", "k.pem", "--ca", "ca/ca.pem", "--days", "30"], tmp_path)
    assert out.startswith("c.pem: ok, valid until")
    assert "key k.pem matches" in out
    assert "chain verifies" in out
    failing = {
        ("--days", "90"): "expires on",
        ("--key", "other.key"): "key other.key does not match the certificate",
        ("--ca", "other.pem"): "chain does not verify",
    }
    for args, says in failing.items():
        result = cert(["check", "c.pem", *args], tmp_path)
        assert result.returncode == 1
        assert result.stdout == ""
        assert result.stderr.count("\n") == 1
        assert says in result.stderr
    # an expired certificate (made through the library with explicit dates)
    now = datetime.datetime.now(datetime.UTC)
    old = tls.self_signed_cert(
        "localhost", validity=(now - datetime.timedelta(days=30), now - datetime.timedelta(days=2))
    )
    (tmp_path / "old.pem").write_bytes(old.cert_pem.bytes())
    result = cert(["check", "old.pem", "--days", "0"], tmp_path)
    assert result.returncode == 1
    assert "expired on" in result.stderr


@pytest.fixture(scope="module")
def bad_input_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An encrypted CA, an encrypted key with its cert, and an unrelated key (made once)."""
    directory = tmp_path_factory.mktemp("bad-input")
    (directory / "right.txt").write_text("right\n")
    (directory / "wrong.txt").write_text("wrong\n")
    ok(["ca", "--dir", "ca", "--passphrase-file", "right.txt"], directory)
    ok(
        [
            "selfsigned",
            "--cert",
            "existing.pem",
            "--key",
            "existing.key",
            "--passphrase-file",
            "right.txt",
            "localhost",
        ],
        directory,
    )
    ok(["selfsigned", "--cert", "mismatch.pem", "--key", "mismatch.key", "localhost"], directory)
    return directory


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (
            [
                "selfsigned",
                "--cert",
                "c.pem",
                "--key",
                "k.pem",
                "--key-type",
                "dsa-1024",
                "localhost",
            ],
            "unknown key type 'dsa-1024'",
        ),
        (
            [
                "selfsigned",
                "--cert",
                "c.pem",
                "--key",
                "k.pem",
                "--key-type",
                "rsa-1024",
                "localhost",
            ],
            "RSA keys need at least 2048 bits",
        ),
        (
            ["selfsigned", "--cert", "c.pem", "--key", "k.pem", "DNS:127.0.0.1"],
            "'127.0.0.1' is an IP address, not a DNS name",
        ),
        (
            ["selfsigned", "--cert", "c.pem", "--key", "k.pem", "IP:example.org"],
            "'example.org' is not an IP address",
        ),
        (
            ["selfsigned", "--cert", "c.pem", "--key", "k.pem", "bad_host.example"],
            "is not a valid DNS name",
        ),
        (
            ["selfsigned", "--cert", "c.pem", "--key", "k.pem", "--days", "0", "localhost"],
            "must be valid for at least one day",
        ),
        (
            ["selfsigned", "--cert", "c.pem", "--key", "k.pem", "--days", "-5", "localhost"],
            "must be valid for at least one day",
        ),
        (["ca", "--dir", "newca", "--days", "0"], "must be valid for at least one day"),
        (
            [
                "issue",
                "--ca",
                "ca",
                "--cert",
                "c.pem",
                "--key",
                "k.pem",
                "--ca-passphrase-file",
                "wrong.txt",
                "localhost",
            ],
            "wrong passphrase",
        ),
        (
            ["issue", "--ca", "ca", "--cert", "c.pem", "--key", "k.pem", "localhost"],
            "the private key is encrypted",
        ),
        (
            ["issue", "--ca", "nowhere", "--cert", "c.pem", "--key", "k.pem", "localhost"],
            "does not exist",
        ),
        (
            [
                "csr",
                "--key",
                "existing.key",
                "--out",
                "r.csr",
                "--passphrase-file",
                "wrong.txt",
                "localhost",
            ],
            "wrong passphrase",
        ),
        (["check", "existing.pem", "--key", "mismatch.key"], "does not match the certificate"),
        (
            ["selfsigned", "--cert", "c.pem", "--key", "existing.key", "localhost"],
            "existing.key already exists",
        ),
        (
            [
                "selfsigned",
                "--cert",
                "c.pem",
                "--key",
                "k.pem",
                "--passphrase-credential",
                "pw",
                "localhost",
            ],
            "needs $CREDENTIALS_DIRECTORY",
        ),
        (
            [
                "selfsigned",
                "--cert",
                "c.pem",
                "--key",
                "k.pem",
                "--passphrase-file",
                "missing.txt",
                "localhost",
            ],
            "does not exist",
        ),
        (["show", "missing.pem"], "does not exist"),
    ],
    ids=lambda value: value if isinstance(value, str) else None,
)
def test_bad_input_one_line_and_nothing_written(
    bad_input_dir: Path, tmp_path: Path, args: list[str], says: str
) -> None:
    tmp_path = tmp_path / "work"
    shutil.copytree(bad_input_dir, tmp_path)
    before = listing(tmp_path)
    result = cert(args, tmp_path)
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("cpsysd: error: ")
    assert says in lines[0]
    assert listing(tmp_path) == before  # nothing written, nothing replaced


def test_passphrase_from_a_systemd_credential(tmp_path: Path) -> None:
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "ca-pass").write_text("from-the-credential")
    env = {"CREDENTIALS_DIRECTORY": str(creds)}
    ok(["ca", "--dir", "ca", "--passphrase-credential", "ca-pass"], tmp_path, env=env)
    assert b"ENCRYPTED PRIVATE KEY" in (tmp_path / "ca/ca.key").read_bytes()
    result = openssl(
        "pkey", "-in", "ca/ca.key", "-passin", f"file:{creds / 'ca-pass'}", "-noout", cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    ok(
        [
            "issue",
            "--ca",
            "ca",
            "--ca-passphrase-credential",
            "ca-pass",
            "--cert",
            "c.pem",
            "--key",
            "k.pem",
            "localhost",
        ],
        tmp_path,
        env=env,
    )
    assert openssl("verify", "-CAfile", "ca/ca.pem", "c.pem", cwd=tmp_path).returncode == 0


def test_force_replaces_and_keeps_modes(tmp_path: Path) -> None:
    ok(["selfsigned", "--cert", "c.pem", "--key", "k.pem", "localhost"], tmp_path)
    old = listing(tmp_path)
    ok(
        [
            "selfsigned",
            "--cert",
            "c.pem",
            "--key",
            "k.pem",
            "--force",
            "--key-type",
            "ec-p384",
            "localhost",
        ],
        tmp_path,
    )
    new = listing(tmp_path)
    assert set(new) == {"c.pem", "k.pem"}
    assert new["k.pem"] != old["k.pem"]
    assert (mode(tmp_path / "k.pem"), mode(tmp_path / "c.pem")) == (0o600, 0o644)
    assert "secp384r1" in ok(["show", "c.pem"], tmp_path)


@pytest.mark.skipif(not Path("/usr/bin/python3").exists(), reason="no Debian python3")
def test_debian_typer_and_cryptography(tmp_path: Path) -> None:
    """The .deb runs on bookworm's python3-typer 0.7 and python3-cryptography 38."""
    probe = subprocess.run(
        ["/usr/bin/python3", "-c", "import typer, cryptography, click"],
        capture_output=True,
        check=False,
    )
    if probe.returncode != 0:
        pytest.skip("python3-typer / python3-cryptography not installed")
    env = {"PYTHONPATH": str(REPO)}
    run = {"env": env, "python": "/usr/bin/python3"}
    ok(["ca", "--dir", "ca"], tmp_path, **run)
    ok(
        ["issue", "--ca", "ca", "--cert", "c.pem", "--key", "k.pem", "localhost", "127.0.0.1"],
        tmp_path,
        **run,
    )
    assert "c.pem: ok" in ok(
        ["check", "c.pem", "--key", "k.pem", "--ca", "ca/ca.pem"], tmp_path, **run
    )
    result = cert(
        ["selfsigned", "--cert", "x.pem", "--key", "x.key", "--days", "0", "localhost"],
        tmp_path,
        env=env,
        python="/usr/bin/python3",
    )
    assert result.returncode != 0
    assert len(result.stderr.splitlines()) == 1
    assert "HOST..." in ok(["selfsigned", "--help"], tmp_path, **run)
