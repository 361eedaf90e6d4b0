"""cpsysd.tls.pki, tlscert, tlsnames: keys, certificates, CA, CSR, checked by the real openssl CLI
and by real TLS handshakes through Python's ssl module."""

from __future__ import annotations

import datetime
import os
import shutil
import socket
import ssl
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from cpsysd.errors import TLSError
from cpsysd.tls import pki as tls
from cpsysd.tls.names import HostKind, check_days, parse_host, parse_hosts, parse_key_type
from cpsysd.tls.x509 import Certificate, verify_chain

REPO = Path(__file__).resolve().parent.parent
UTC = datetime.UTC


def openssl(*args: str, input_bytes: bytes | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["openssl", *args],
        capture_output=True,
        text=True,
        check=False,
        input=input_bytes.decode() if input_bytes else None,
    )


def write(path: Path, blob: tls.Blob) -> Path:
    path.write_bytes(blob.bytes())
    return path


@pytest.fixture(scope="module")
def ca() -> tls.CertificateAuthority:
    return tls.CertificateAuthority.create()


# --- host names ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "kind", "value"),
    [
        ("localhost", HostKind.DNS, "localhost"),
        ("Example.ORG", HostKind.DNS, "example.org"),
        ("*.example.org", HostKind.DNS, "*.example.org"),
        ("éxample.org", HostKind.DNS, "xn--xample-9ua.org"),
        ("xn--xample-9ua.org", HostKind.DNS, "xn--xample-9ua.org"),
        ("127.0.0.1", HostKind.IP, "127.0.0.1"),
        ("::1", HostKind.IP, "::1"),
        ("[2001:db8::0001]", HostKind.IP, "2001:db8::1"),
        ("IP:10.0.0.2", HostKind.IP, "10.0.0.2"),
        ("dns:app.test", HostKind.DNS, "app.test"),
        ("a-b.c1.example", HostKind.DNS, "a-b.c1.example"),
    ],
)
def test_hosts_become_the_right_san_type(text: str, kind: HostKind, value: str) -> None:
    host = parse_host(text)
    assert (host.kind, host.value) == (kind, value)


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("DNS:127.0.0.1", "is an IP address, not a DNS name"),
        ("DNS:::1", "is an IP address, not a DNS name"),
        ("IP:example.org", "is not an IP address"),
        ("IP:10.0.0.256", "is not an IP address"),
        ("10.0.0.256", "neither a valid IP address nor a DNS name"),
        ("1.2.3", "neither a valid IP address nor a DNS name"),
        ("bad_name.example", "not a valid DNS name"),
        ("-lead.example", "not a valid DNS name"),
        ("a..b", "not a valid DNS name"),
        ("example.org.", "ends with a dot"),
        ("*.org", "wildcard needs two labels"),
        ("a.*.example.org", "not a valid DNS name"),
        ("fe80::1%eth0", "zone index"),
        ("two words", "spaces"),
        ("line\nbreak", "control characters"),
        ("", "empty host name"),
        ("x" * 64 + ".example", "not a valid DNS name"),
        ("a." * 127 + "example", "not a valid DNS name"),
    ],
)
def test_malformed_hosts_are_refused_in_one_line(text: str, says: str) -> None:
    with pytest.raises(TLSError) as caught:
        parse_host(text)
    assert says in caught.value.one_line()
    assert "\n" not in caught.value.one_line()


def test_hosts_keep_order_and_drop_duplicates() -> None:
    hosts = parse_hosts(["localhost", "127.0.0.1", "LOCALHOST", "IP:127.0.0.1"])
    assert [str(h) for h in hosts] == ["DNS:localhost", "IP:127.0.0.1"]
    with pytest.raises(TLSError, match="no host names"):
        parse_hosts([])


# --- key types and validity ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("ec-p256", tls.KeyType.EC_P256),
        ("P-384", tls.KeyType.EC_P384),
        ("rsa-3072", tls.KeyType.RSA_3072),
        ("RSA4096", tls.KeyType.RSA_4096),
        ("prime256v1", tls.KeyType.EC_P256),
        ("rsa_2048", tls.KeyType.RSA_2048),
    ],
)
def test_key_types(text: str, expected: tls.KeyType) -> None:
    assert parse_key_type(text) is expected


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("rsa-1024", "too weak"),
        ("rsa1024", "too weak"),
        ("rsa-512", "too weak"),
        ("dsa", "unknown key type"),
        ("ed25519", "unknown key type"),
        ("rsa-2049", "unknown key type"),
        ("", "unknown key type"),
    ],
)
def test_bad_key_types(text: str, says: str) -> None:
    with pytest.raises(TLSError, match=says):
        parse_key_type(text)


@pytest.mark.parametrize("days", [0, -1, 36501])
def test_bad_validity(days: int) -> None:
    with pytest.raises(TLSError, match="at least one day"):
        check_days(days)
    with pytest.raises(TLSError):
        tls.self_signed_cert("localhost", days=days)


# --- certificates, checked by openssl -----------------------------------------------------


@pytest.mark.parametrize("key_type", list(tls.KeyType))
def test_issued_certificates_verify_with_openssl(
    key_type: tls.KeyType, ca: tls.CertificateAuthority, tmp_path: Path
) -> None:
    leaf = ca.issue_leaf_cert("app.test", "localhost", "127.0.0.1", "::1", key_type=key_type)
    ca_pem = write(tmp_path / "ca.pem", ca.cert_pem)
    leaf_pem = write(tmp_path / "leaf.pem", leaf.cert_pem)
    key_pem = write(tmp_path / "leaf.key", leaf.private_key_pem())
    for check in (
        ["-verify_hostname", "app.test"],
        ["-verify_hostname", "localhost"],
        ["-verify_ip", "127.0.0.1"],
        ["-verify_ip", "::1"],
    ):
        result = openssl(
            "verify", "-CAfile", str(ca_pem), "-purpose", "sslserver", *check, str(leaf_pem)
        )
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip() == f"{leaf_pem}: OK"
    wrong = openssl(
        "verify", "-CAfile", str(ca_pem), "-verify_hostname", "other.test", str(leaf_pem)
    )
    assert wrong.returncode != 0  # the check above can fail
    text = openssl("x509", "-in", str(leaf_pem), "-noout", "-text").stdout
    assert "DNS:app.test, DNS:localhost, IP Address:127.0.0.1, IP Address:0:0:0:0:0:0:0:1" in text
    assert "X509v3 Basic Constraints: critical\n                CA:FALSE" in text
    assert "X509v3 Key Usage: critical\n                Digital Signature" in text
    assert ("Key Encipherment" in text) == key_type.value.startswith("rsa")
    assert "X509v3 Extended Key Usage: \n                TLS Web Server Authentication" in text
    assert "X509v3 Subject Key Identifier" in text
    assert "X509v3 Authority Key Identifier" in text
    pub_from_key = openssl("pkey", "-in", str(key_pem), "-pubout").stdout
    pub_from_cert = openssl("x509", "-in", str(leaf_pem), "-noout", "-pubkey").stdout
    assert pub_from_key
    assert pub_from_key == pub_from_cert
    assert pub_from_key == leaf.private_key.public_key_pem.bytes().decode()
    assert tls.parse_key_type(key_type.value) is leaf.private_key.key_type


def test_ca_certificate_extensions(ca: tls.CertificateAuthority, tmp_path: Path) -> None:
    text = openssl(
        "x509", "-in", str(write(tmp_path / "ca.pem", ca.cert_pem)), "-noout", "-text"
    ).stdout
    assert "CA:TRUE, pathlen:0" in text
    assert "Certificate Sign, CRL Sign" in text
    assert ca.certificate.is_ca
    assert ca.certificate.issuer == ca.certificate.subject


def test_self_signed_certificate_verifies_as_its_own_anchor(tmp_path: Path) -> None:
    leaf = tls.self_signed_cert("localhost", "127.0.0.1", days=30)
    cert = write(tmp_path / "cert.pem", leaf.cert_pem)
    result = openssl(
        "verify",
        "-CAfile",
        str(cert),
        "-purpose",
        "sslserver",
        "-verify_hostname",
        "localhost",
        str(cert),
    )
    assert result.returncode == 0, result.stderr
    assert verify_chain([leaf.certificate], [leaf.certificate]) == leaf.certificate
    assert leaf.chain == ()
    assert leaf.certificate.lifetime_days == 30


def test_csr_verifies_and_names_the_hosts(tmp_path: Path) -> None:
    key = tls.PrivateKey.generate(tls.KeyType.EC_P384)
    csr = write(
        tmp_path / "req.csr",
        tls.certificate_request(key, "example.org", "www.example.org", "192.0.2.7"),
    )
    result = openssl("req", "-in", str(csr), "-verify", "-noout", "-text")
    assert result.returncode == 0, result.stderr
    assert "verify OK" in result.stdout + result.stderr
    assert "DNS:example.org, DNS:www.example.org, IP Address:192.0.2.7" in result.stdout
    assert "CN = example.org" in result.stdout
    pub = openssl("req", "-in", str(csr), "-noout", "-pubkey").stdout
    assert pub == key.public_key_pem.bytes().decode()


# --- encrypted keys ------------------------------------------------------------------------


def test_encrypted_key_round_trip_and_openssl(tmp_path: Path) -> None:
    key = tls.PrivateKey.generate()
    blob = key.pem(b"correct horse")
    assert b"ENCRYPTED PRIVATE KEY" in blob.bytes()
    assert "correct horse" not in repr(key) + repr(blob)
    path = write(tmp_path / "k.pem", blob)
    (tmp_path / "pass").write_text("correct horse\n")
    result = openssl("pkey", "-in", str(path), "-passin", f"file:{tmp_path / 'pass'}", "-pubout")
    assert result.stdout == key.public_key_pem.bytes().decode()
    again = tls.PrivateKey.from_pem(blob.bytes(), b"correct horse")
    assert again.public_key_pem.bytes() == key.public_key_pem.bytes()
    with pytest.raises(TLSError, match="wrong passphrase"):
        tls.PrivateKey.from_pem(blob.bytes(), b"wrong")
    with pytest.raises(TLSError, match="is encrypted"):
        tls.PrivateKey.from_pem(blob.bytes(), None)
    with pytest.raises(TLSError, match="not encrypted but a passphrase"):
        tls.PrivateKey.from_pem(key.pem().bytes(), b"x")
    with pytest.raises(TLSError, match="not a PEM private key"):
        tls.PrivateKey.from_pem(b"garbage", None)


def test_weak_and_foreign_keys_are_refused(tmp_path: Path) -> None:
    weak = tmp_path / "weak.key"
    subprocess.run(
        ["openssl", "genrsa", "-out", str(weak), "1024"], check=True, capture_output=True
    )
    with pytest.raises(TLSError, match="1024 bits is too weak"):
        tls.PrivateKey.from_pem(weak.read_bytes())
    ed = tmp_path / "ed.key"
    subprocess.run(["openssl", "genpkey", "-algorithm", "ed25519", "-out", str(ed)], check=True)
    with pytest.raises(TLSError, match="not supported"):
        tls.PrivateKey.from_pem(ed.read_bytes())


# --- chain verification --------------------------------------------------------------------


def test_verify_chain_failures(ca: tls.CertificateAuthority) -> None:
    leaf = ca.issue_leaf_cert("localhost")
    other = tls.CertificateAuthority.create()
    # Same subject name, different key: only the signature check tells them apart.
    assert other.certificate.subject == ca.certificate.subject
    assert verify_chain([leaf.certificate], [ca.certificate]) == ca.certificate
    with pytest.raises(TLSError, match="nothing in the CA file issued"):
        verify_chain([leaf.certificate], [other.certificate])
    now = datetime.datetime.now(UTC)
    old = ca.issue_leaf_cert(
        "localhost", validity=(now - datetime.timedelta(days=10), now - datetime.timedelta(days=1))
    )
    with pytest.raises(TLSError, match="expired on"):
        verify_chain([old.certificate], [ca.certificate])


def test_certificate_files_with_several_blocks(ca: tls.CertificateAuthority) -> None:
    leaf = ca.issue_leaf_cert("localhost")
    certs = Certificate.list_from_pem(leaf.cert_pem.bytes() + b"\n" + leaf.chain_pem.bytes())
    assert [c.subject for c in certs] == [leaf.certificate.subject, ca.certificate.subject]
    with pytest.raises(TLSError, match="is a private key"):
        Certificate.list_from_pem(leaf.private_key_pem().bytes(), "key.pem")
    with pytest.raises(TLSError, match="no PEM certificate"):
        Certificate.list_from_pem(b"hello", "x.pem")


# --- real handshakes with the objects' ssl helpers -----------------------------------------


def _handshake(server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext, hostname: str) -> str:
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    errors: list[BaseException] = []

    def serve() -> None:
        conn, _ = listener.accept()
        try:
            with server_ctx.wrap_socket(conn, server_side=True) as tls_conn:
                tls_conn.sendall(b"hello over " + tls_conn.version().encode())  # type: ignore[union-attr]
        except (ssl.SSLError, OSError) as err:
            errors.append(err)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        with (
            socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
            client_ctx.wrap_socket(raw, server_hostname=hostname) as conn,
        ):
            return conn.recv(100).decode()
    finally:
        thread.join(5)
        listener.close()


def test_handshake_with_issued_certificate(ca: tls.CertificateAuthority) -> None:
    leaf = ca.issue_leaf_cert("localhost", "127.0.0.1", key_type=tls.KeyType.RSA_2048)
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    leaf.configure_cert(server)
    client = ssl.create_default_context()
    ca.configure_trust(client)
    assert _handshake(server, client, "localhost").startswith("hello over TLSv1.")
    assert _handshake(server, client, "127.0.0.1").startswith("hello over TLSv1.")
    with pytest.raises(ssl.SSLCertVerificationError):
        _handshake(server, client, "elsewhere.test")
    stranger = ssl.create_default_context()  # does not trust this CA
    with pytest.raises(ssl.SSLCertVerificationError):
        _handshake(server, stranger, "localhost")


# --- Debian bookworm's cryptography 38 -----------------------------------------------------

_COMPAT_SCRIPT = r"""
import sys, datetime, cryptography
from cpsysd.tls import pki as tls
from cpsysd.tls.x509 import verify_chain
ca = tls.CertificateAuthority.create(tls.KeyType.EC_P384)
for kt in tls.KeyType:
    if kt is not tls.KeyType.RSA_4096:
        leaf = ca.issue_leaf_cert("localhost", "127.0.0.1", key_type=kt)
        verify_chain([leaf.certificate], [ca.certificate])
ss = tls.self_signed_cert("localhost", days=10)
assert ss.certificate.not_after.tzinfo is not None and ss.certificate.lifetime_days == 10
enc = ss.private_key_pem(b"pw")
assert tls.PrivateKey.from_pem(enc.bytes(), b"pw").matches(ss.certificate)
try:
    tls.PrivateKey.from_pem(enc.bytes(), b"wrong")
except Exception as err:
    assert "wrong passphrase" in str(err), err
tls.certificate_request(ss.private_key, "localhost")
print(cryptography.__version__)
"""


@pytest.mark.skipif(not Path("/usr/bin/python3").exists(), reason="no Debian python3")
def test_works_with_debian_cryptography(tmp_path: Path) -> None:
    probe = subprocess.run(
        ["/usr/bin/python3", "-c", "import cryptography; print(cryptography.__version__)"],
        capture_output=True,
        text=True,
        check=False,
    )
    if probe.returncode != 0:
        pytest.skip("python3-cryptography is not installed")
    result = subprocess.run(
        ["/usr/bin/python3", "-c", _COMPAT_SCRIPT],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == probe.stdout.strip()
    venv = sys.modules["cryptography"].__version__
    print(f"cryptography {result.stdout.strip()} (Debian) and {venv} (.venv) both pass")


def test_openssl_is_present() -> None:
    assert shutil.which("openssl"), "scripts/setup.sh installs openssl"
