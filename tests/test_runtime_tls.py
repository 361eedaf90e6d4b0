"""HTTPS from ``cpsysd serve``: real handshakes (Python's ssl, curl) on sockets passed by the real
systemd-socket-activate; the chain is sent; TLS 1.1 is refused; files come from
$CREDENTIALS_DIRECTORY (0440) when set; SIGHUP swaps the certificate without dropping
connections. Certificates are made with the openssl CLI: root CA -> intermediate -> leaf, and
clients trust only the root, so a handshake only verifies if the server sends the chain."""

from __future__ import annotations

import http.client
import json
import signal
import ssl
import subprocess
import time
from pathlib import Path

import pytest
from runtimekit import (
    CPSYSD,
    NotifyReceiver,
    Proc,
    free_port,
    free_ports,
    get_json,
    socket_activate,
    wait_listening,
    write_app,
)


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def make_pki(directory: Path, leaf: str = "leaf") -> dict[str, Path]:
    """root.pem, inter.pem (the chain) and LEAF.pem/LEAF.key for localhost/127.0.0.1/::1."""
    directory.mkdir(parents=True, exist_ok=True)
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"]
    if not (directory / "root.pem").exists():
        _openssl(
            "req",
            "-x509",
            *ec,
            "-keyout",
            "root.key",
            "-out",
            "root.pem",
            "-days",
            "2",
            "-subj",
            "/CN=cpsysd test root",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
            cwd=directory,
        )
        _openssl(
            "req",
            *ec,
            "-keyout",
            "inter.key",
            "-out",
            "inter.csr",
            "-subj",
            "/CN=cpsysd test intermediate",
            cwd=directory,
        )
        (directory / "inter.ext").write_text(
            "basicConstraints=critical,CA:TRUE,pathlen:0\nkeyUsage=critical,keyCertSign,cRLSign\n"
        )
        _openssl(
            "x509",
            "-req",
            "-in",
            "inter.csr",
            "-CA",
            "root.pem",
            "-CAkey",
            "root.key",
            "-CAcreateserial",
            "-out",
            "inter.pem",
            "-days",
            "2",
            "-extfile",
            "inter.ext",
            cwd=directory,
        )
    _openssl(
        "req",
        *ec,
        "-keyout",
        f"{leaf}.key",
        "-out",
        f"{leaf}.csr",
        "-subj",
        "/CN=localhost",
        cwd=directory,
    )
    (directory / "leaf.ext").write_text(
        "subjectAltName=DNS:localhost,IP:127.0.0.1,IP:::1\nbasicConstraints=CA:FALSE\n"
        "extendedKeyUsage=serverAuth\nkeyUsage=critical,digitalSignature\n"
    )
    _openssl(
        "x509",
        "-req",
        "-in",
        f"{leaf}.csr",
        "-CA",
        "inter.pem",
        "-CAkey",
        "inter.key",
        "-CAcreateserial",
        "-out",
        f"{leaf}.pem",
        "-days",
        "2",
        "-extfile",
        "leaf.ext",
        cwd=directory,
    )
    return {
        "root": directory / "root.pem",
        "chain": directory / "inter.pem",
        "cert": directory / f"{leaf}.pem",
        "key": directory / f"{leaf}.key",
    }


def _tls_table(cert: Path | str, key: Path | str, chain: Path | str) -> str:
    return f'[tls]\ncert = "{cert}"\nkey = "{key}"\nchain = "{chain}"\n'


def _client(root: Path) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(root))


def _https_whoami(
    port: int, context: ssl.SSLContext, host: str = "localhost"
) -> tuple[dict[str, object], bytes]:
    conn = http.client.HTTPSConnection(host, port, context=context, timeout=20)
    try:
        conn.request("GET", "/whoami")
        body = json.loads(conn.getresponse().read())
        assert conn.sock is not None
        certificate = conn.sock.getpeercert(binary_form=True)
        return body, certificate or b""
    finally:
        conn.close()


@pytest.fixture
def pki(tmp_path: Path) -> dict[str, Path]:
    return make_pki(tmp_path / "pki")


def _serve_tls(
    tmp_path: Path,
    pki: dict[str, Path],
    port: int,
    extra_env: dict[str, str] | None = None,
    tls: str | None = None,
) -> Proc:
    description = write_app(
        tmp_path / "app",
        [f"{port}=https"],
        extra=tls or _tls_table(pki["cert"], pki["key"], pki["chain"]),
    )
    argv = socket_activate(
        [str(port)], [*CPSYSD, "serve", "-c", str(description)], fdnames=["https"], env=extra_env
    )
    proc = Proc(argv, tmp_path / "serve.log")
    wait_listening(str(port))
    return proc


def test_https_on_an_activated_socket_sends_the_chain(tmp_path: Path, pki: dict[str, Path]) -> None:
    port = free_port()
    proc = _serve_tls(tmp_path, pki, port)
    try:
        seen, _ = _https_whoami(port, _client(pki["root"]))
        assert seen["scheme"] == "https"
        assert seen["ip"] == "127.0.0.1"
        curl = subprocess.run(
            ["curl", "-sS", "--cacert", str(pki["root"]), f"https://localhost:{port}/"],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert curl.returncode == 0, curl.stderr
        assert curl.stdout == "hello\n"
    finally:
        assert proc.stop() == 0
    assert "Traceback" not in proc.output()


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1_1 is deprecated:DeprecationWarning")
def test_tls_1_1_is_refused(tmp_path: Path, pki: dict[str, Path]) -> None:
    port = free_port()
    proc = _serve_tls(tmp_path, pki, port)
    try:
        modern = _client(pki["root"])
        assert _https_whoami(port, modern)[0]["scheme"] == "https"  # the control: TLS 1.2+ works
        old = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        old.load_verify_locations(str(pki["root"]))
        old.set_ciphers("DEFAULT:@SECLEVEL=0")  # let this client really offer TLS 1.1
        old.minimum_version = old.maximum_version = ssl.TLSVersion.TLSv1_1
        with pytest.raises(ssl.SSLError) as refused:
            _https_whoami(port, old)
        print(f"\nTLS 1.1 client: {refused.value}")
        assert _https_whoami(port, modern)[0]["scheme"] == "https"
    finally:
        assert proc.stop() == 0


def test_files_from_the_credentials_directory(tmp_path: Path, pki: dict[str, Path]) -> None:
    """LoadCredential= copies: 0440 files in $CREDENTIALS_DIRECTORY win over the [tls] paths
    (which do not even exist here)."""
    credentials = tmp_path / "credentials"
    credentials.mkdir()
    for name, source in (
        ("tls-cert", pki["cert"]),
        ("tls-key", pki["key"]),
        ("tls-chain", pki["chain"]),
    ):
        target = credentials / name
        target.write_bytes(source.read_bytes())
        target.chmod(0o440)
    port = free_port()
    missing = tmp_path / "nowhere"
    proc = _serve_tls(
        tmp_path,
        pki,
        port,
        extra_env={"CREDENTIALS_DIRECTORY": str(credentials)},
        tls=_tls_table(missing / "c.pem", missing / "k.pem", missing / "i.pem"),
    )
    try:
        assert _https_whoami(port, _client(pki["root"]))[0]["scheme"] == "https"
    finally:
        assert proc.stop() == 0


def test_sighup_swaps_the_certificate_without_dropping_connections(
    tmp_path: Path, pki: dict[str, Path]
) -> None:
    port = free_port()
    receiver = NotifyReceiver(tmp_path / "notify.sock")
    proc = _serve_tls(tmp_path, pki, port, extra_env={"NOTIFY_SOCKET": receiver.path})
    try:
        context = _client(pki["root"])
        _, first = _https_whoami(port, context)
        kept = http.client.HTTPSConnection("localhost", port, context=context, timeout=20)
        kept.request("GET", "/")
        assert kept.getresponse().read() == b"hello\n"

        renewed = make_pki(tmp_path / "pki", leaf="renewed")
        pki["cert"].write_bytes(renewed["cert"].read_bytes())
        pki["key"].write_bytes(renewed["key"].read_bytes())
        ready = receiver.wait_for("READY", "1")
        proc.signal(signal.SIGHUP)
        receiver.wait_for("READY", "1", start=ready + 1)

        _, second = _https_whoami(port, context)
        assert second != first  # new connections get the new certificate
        assert second == ssl.PEM_cert_to_DER_cert(renewed["cert"].read_text())
        kept.request("GET", "/")  # the connection made before the reload goes on
        assert kept.getresponse().read() == b"hello\n"
        kept.close()
    finally:
        assert proc.stop() == 0
        receiver.close()


def test_http_and_https_from_one_process(tmp_path: Path, pki: dict[str, Path]) -> None:
    plain, secure = free_ports(2)
    description = write_app(
        tmp_path / "app",
        [f"{plain}=http", f"{secure}=https"],
        extra=_tls_table(pki["cert"], pki["key"], pki["chain"]),
    )
    argv = socket_activate(
        [str(plain), str(secure)],
        [*CPSYSD, "serve", "-c", str(description)],
        fdnames=["http", "https"],
    )
    proc = Proc(argv, tmp_path / "serve.log")
    try:
        time.sleep(0.2)
        assert get_json(f"127.0.0.1:{plain}")["scheme"] == "http"
        assert _https_whoami(secure, _client(pki["root"]))[0]["scheme"] == "https"
    finally:
        assert proc.stop() == 0


def _encrypt_with_openssl(key: Path, out: Path, passphrase: str) -> None:
    """``key`` encrypted with AES-256 under ``passphrase`` by openssl (not by cpsysd)."""
    argv = ["openssl", "pkey", "-in", str(key), "-aes256", "-passout", f"pass:{passphrase}"]
    subprocess.run([*argv, "-out", str(out)], check=True)


def test_encrypted_key_with_a_passphrase_credential(tmp_path: Path, pki: dict[str, Path]) -> None:
    credentials = tmp_path / "credentials"
    credentials.mkdir()
    _encrypt_with_openssl(pki["key"], credentials / "tls-key", "s3cret")
    (credentials / "tls-cert").write_bytes(pki["cert"].read_bytes())
    (credentials / "tls-chain").write_bytes(pki["chain"].read_bytes())
    (credentials / "tls-key-passphrase").write_text("s3cret\n")
    port = free_port()
    proc = _serve_tls(tmp_path, pki, port, extra_env={"CREDENTIALS_DIRECTORY": str(credentials)})
    try:
        assert _https_whoami(port, _client(pki["root"]))[0]["scheme"] == "https"
    finally:
        assert proc.stop() == 0


def _start_error(tmp_path: Path, pki: dict[str, Path], credentials: Path) -> str:
    port = free_port()
    description = write_app(
        tmp_path / "app", [f"{port}=https"], extra=_tls_table(pki["cert"], pki["key"], pki["chain"])
    )
    proc = Proc(
        [*CPSYSD, "serve", "-c", str(description)],
        tmp_path / "serve.log",
        env={"CREDENTIALS_DIRECTORY": str(credentials)},
    )
    assert proc.wait(30) == 1
    output = proc.output()
    assert "Traceback" not in output
    return next(line for line in output.splitlines() if line.startswith("cpsysd: error:"))


def test_encrypted_key_without_passphrase_is_one_line(tmp_path: Path, pki: dict[str, Path]) -> None:
    credentials = tmp_path / "credentials"
    credentials.mkdir()
    _encrypt_with_openssl(pki["key"], credentials / "tls-key", "x")
    (credentials / "tls-cert").write_bytes(pki["cert"].read_bytes())
    line = _start_error(tmp_path, pki, credentials)
    assert f"the TLS key {credentials / 'tls-key'} is encrypted" in line


def test_key_not_matching_the_certificate_is_one_line(tmp_path: Path, pki: dict[str, Path]) -> None:
    other = make_pki(tmp_path / "pki", leaf="other")
    credentials = tmp_path / "credentials"
    credentials.mkdir()
    (credentials / "tls-cert").write_bytes(pki["cert"].read_bytes())
    (credentials / "tls-key").write_bytes(other["key"].read_bytes())
    line = _start_error(tmp_path, pki, credentials)
    assert "cannot use" in line
    assert "KEY_VALUES_MISMATCH" in line
