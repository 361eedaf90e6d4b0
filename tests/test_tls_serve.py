"""HTTPS from ``cpsysd serve`` over sockets passed by the real ``systemd-socket-activate``, with
certificates made by ``cpsysd cert``: Python's ssl client, curl --cacert and openssl s_client;
TLS 1.1 refused (by a server that could speak it, as a control shows); HTTP and HTTPS from one
process; the files read from a credentials directory (0440, as systemd leaves them); a renewed
certificate picked up on SIGHUP while an open connection keeps working."""

from __future__ import annotations

import http.client
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from runtimekit import CPSYSD, Proc, free_port, free_ports, socket_activate, write_app

pytestmark = pytest.mark.skipif(
    shutil.which("systemd-socket-activate") is None, reason="systemd-socket-activate missing"
)
# A client that may speak TLS 1.0/1.1: OpenSSL 3 only allows them at security level 0.
OLD_CIPHERS = "DEFAULT:@SECLEVEL=0"


def cert_cli(args: list[str], cwd: Path) -> None:
    result = subprocess.run(
        [*CPSYSD, "cert", *args], cwd=cwd, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr


@pytest.fixture
def pki(tmp_path: Path) -> Path:
    """ca/ca.pem, and leaf.pem + leaf.key + leaf.chain.pem for localhost, 127.0.0.1 and ::1."""
    cert_cli(["ca", "--dir", "ca"], tmp_path)
    cert_cli(
        [
            "issue",
            "--ca",
            "ca",
            "--cert",
            "leaf.pem",
            "--key",
            "leaf.key",
            "localhost",
            "127.0.0.1",
            "::1",
        ],
        tmp_path,
    )
    return tmp_path


def tls_table(directory: Path, chain: bool = True) -> str:
    extra = f'chain = "{directory}/leaf.chain.pem"\n' if chain else ""
    return f'[tls]\ncert = "{directory}/leaf.pem"\nkey = "{directory}/leaf.key"\n{extra}'


def client_context(pki: Path) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(pki / "ca" / "ca.pem"))


def https_get(
    port: int,
    context: ssl.SSLContext,
    host: str = "localhost",
    path: str = "/whoami",
    timeout: float = 20,
) -> tuple[int, bytes, dict[str, object]]:
    """GET over TLS, retrying while systemd-socket-activate is still setting up."""
    deadline = time.monotonic() + timeout
    while True:
        conn = http.client.HTTPSConnection(host, port, context=context, timeout=timeout)
        try:
            conn.request("GET", path)
            response = conn.getresponse()
            assert conn.sock is not None
            peer = conn.sock.getpeercert()
            return response.status, response.read(), {"version": conn.sock.version(), "cert": peer}  # type: ignore[attr-defined]
        except ConnectionRefusedError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)
        finally:
            conn.close()


@pytest.fixture
def https_server(pki: Path) -> Iterator[tuple[int, Proc]]:
    port = free_port()
    description = write_app(pki / "app", [f"127.0.0.1:{port}=https"], extra=tls_table(pki))
    argv = socket_activate(
        [f"127.0.0.1:{port}"], [*CPSYSD, "serve", "-c", str(description)], fdnames=["https"]
    )
    proc = Proc(argv, pki / "serve.log")
    try:
        yield port, proc
    finally:
        assert proc.stop() == 0, proc.output()


def test_python_ssl_client_and_curl(pki: Path, https_server: tuple[int, Proc]) -> None:
    port, proc = https_server
    status, body, info = https_get(port, client_context(pki))
    assert status == 200
    seen = json.loads(body)
    assert (seen["scheme"], seen["ip"]) == ("https", "127.0.0.1")
    assert info["version"] in ("TLSv1.2", "TLSv1.3")
    subject = dict(item[0] for item in info["cert"]["subject"])  # type: ignore[index]
    assert subject["commonName"] == "localhost"
    status, _, _ = https_get(port, client_context(pki), host="127.0.0.1")  # the IP SAN
    assert status == 200
    for url in (f"https://localhost:{port}/whoami", f"https://127.0.0.1:{port}/whoami"):
        curl = subprocess.run(
            ["curl", "--silent", "--show-error", "--fail", "--cacert", str(pki / "ca/ca.pem"), url],
            capture_output=True,
            text=True,
            check=False,
            timeout=30,
        )
        assert curl.returncode == 0, curl.stderr
        assert json.loads(curl.stdout)["scheme"] == "https"
    # A client that does not trust the CA is refused by its own verification.
    curl = subprocess.run(
        ["curl", "--silent", f"https://localhost:{port}/"],
        capture_output=True,
        check=False,
        timeout=30,
    )
    assert curl.returncode == 60  # CURLE_PEER_FAILED_VERIFICATION
    assert f"Serving on https://127.0.0.1:{port}" in proc.output()


def test_the_chain_is_sent_after_the_certificate(pki: Path, https_server: tuple[int, Proc]) -> None:
    port, _ = https_server
    https_get(port, client_context(pki))  # started
    result = subprocess.run(
        [
            "openssl",
            "s_client",
            "-connect",
            f"127.0.0.1:{port}",
            "-servername",
            "localhost",
            "-showcerts",
            "-CAfile",
            str(pki / "ca/ca.pem"),
            "-verify_return_error",
        ],
        input="",
        capture_output=True,
        text=True,
        check=False,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("-----BEGIN CERTIFICATE-----") == 2
    assert "Verify return code: 0 (ok)" in result.stdout


def _control_server(pki: Path) -> tuple[int, threading.Thread, socket.socket]:
    """A plain Python TLS server that does accept TLS 1.1: proves the old client can speak it."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1
    context.set_ciphers(OLD_CIPHERS)
    context.load_cert_chain(str(pki / "leaf.pem"), str(pki / "leaf.key"))
    listener = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        for _ in range(2):
            conn, _ = listener.accept()
            try:
                with context.wrap_socket(conn, server_side=True) as tls_conn:
                    tls_conn.sendall(tls_conn.version().encode())  # type: ignore[union-attr]
            except (ssl.SSLError, OSError):
                pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return listener.getsockname()[1], thread, listener


def _tls11_client(pki: Path) -> ssl.SSLContext:
    context = client_context(pki)
    context.minimum_version = ssl.TLSVersion.TLSv1
    context.maximum_version = ssl.TLSVersion.TLSv1_1
    context.set_ciphers(OLD_CIPHERS)
    return context


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1:DeprecationWarning")
def test_tls_1_1_is_refused(pki: Path, https_server: tuple[int, Proc]) -> None:
    port, _ = https_server
    assert https_get(port, client_context(pki))[0] == 200
    control_port, thread, listener = _control_server(pki)
    try:
        with (
            socket.create_connection(("127.0.0.1", control_port), timeout=10) as raw,
            _tls11_client(pki).wrap_socket(raw, server_hostname="localhost") as conn,
        ):
            assert conn.recv(20) == b"TLSv1.1"  # the client and this OpenSSL can do TLS 1.1
        s_client = [
            "openssl",
            "s_client",
            "-tls1_1",
            "-cipher",
            OLD_CIPHERS,
            "-servername",
            "localhost",
        ]
        control = subprocess.run(
            [*s_client, "-connect", f"127.0.0.1:{control_port}"],
            input="",
            capture_output=True,
            text=True,
            check=False,
            timeout=30,
        )
        # (exit status 1: the control server closes without close_notify)
        assert "Protocol  : TLSv1.1" in control.stdout, control.stdout + control.stderr
        assert "Cipher is (NONE)" not in control.stdout
    finally:
        thread.join(10)
        listener.close()
    with (
        pytest.raises(ssl.SSLError, match="TLSV1_ALERT_PROTOCOL_VERSION"),
        socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
    ):
        _tls11_client(pki).wrap_socket(raw, server_hostname="localhost")
    refused = subprocess.run(
        [*s_client, "-connect", f"127.0.0.1:{port}"],
        input="",
        capture_output=True,
        text=True,
        check=False,
        timeout=30,
    )
    assert refused.returncode != 0
    assert "Cipher is (NONE)" in refused.stdout
    assert "no peer certificate available" in refused.stdout
    assert "tlsv1 alert protocol version" in refused.stderr  # the server's alert 70
    assert https_get(port, client_context(pki))[0] == 200  # still serving


def test_http_and_https_from_one_process(pki: Path) -> None:
    http_port, https_port = free_ports(2)
    description = write_app(
        pki / "app",
        [f"127.0.0.1:{http_port}=http", f"127.0.0.1:{https_port}=https"],
        extra=tls_table(pki),
    )
    argv = socket_activate(
        [f"127.0.0.1:{http_port}", f"127.0.0.1:{https_port}"],
        [*CPSYSD, "serve", "-c", str(description)],
        fdnames=["http", "https"],
    )
    proc = Proc(argv, pki / "serve.log")
    try:
        secure = json.loads(https_get(https_port, client_context(pki))[1])
        conn = http.client.HTTPConnection("127.0.0.1", http_port, timeout=20)
        conn.request("GET", "/whoami")
        plain = json.loads(conn.getresponse().read())
        conn.close()
        assert (plain["scheme"], secure["scheme"]) == ("http", "https")
        assert plain["pid"] == secure["pid"] == proc.pid  # one process, both sockets
        # TLS on the plain socket does not work, and plain HTTP on the TLS socket gets no page.
        with pytest.raises((ssl.SSLError, ConnectionError)):
            https_get(http_port, client_context(pki), timeout=5)
        conn = http.client.HTTPConnection("127.0.0.1", https_port, timeout=10)
        try:
            conn.request("GET", "/whoami")
            assert conn.getresponse().status == 400
        except (http.client.HTTPException, ConnectionError):
            pass
        finally:
            conn.close()
    finally:
        assert proc.stop() == 0, proc.output()


def test_files_from_the_credentials_directory(pki: Path) -> None:
    """What LoadCredential= leaves: tls-cert, tls-key, tls-chain, mode 0440. The description's
    [tls] paths point nowhere, so only the credentials can have been used."""
    creds = pki / "creds"
    creds.mkdir()
    for name, source in (
        ("tls-cert", "leaf.pem"),
        ("tls-key", "leaf.key"),
        ("tls-chain", "leaf.chain.pem"),
    ):
        shutil.copy(pki / source, creds / name)
        (creds / name).chmod(0o440)
    port = free_port()
    description = write_app(
        pki / "app",
        [f"127.0.0.1:{port}=https"],
        extra='[tls]\ncert = "/nonexistent/c.pem"\nkey = "/nonexistent/k.pem"\n',
    )
    argv = socket_activate(
        [f"127.0.0.1:{port}"],
        [*CPSYSD, "serve", "-c", str(description)],
        fdnames=["https"],
        env={"CREDENTIALS_DIRECTORY": str(creds)},
    )
    proc = Proc(argv, pki / "serve.log")
    try:
        assert https_get(port, client_context(pki))[0] == 200
    finally:
        assert proc.stop() == 0, proc.output()


def test_renewed_certificate_is_served_after_sighup(pki: Path) -> None:
    port = free_port()
    description = write_app(
        pki / "app",
        [f"127.0.0.1:{port}=https"],
        extra=tls_table(pki) + f'renew_days = 30\nca_dir = "{pki}/ca"\nhosts = ["localhost"]\n',
    )
    argv = socket_activate(
        [f"127.0.0.1:{port}"], [*CPSYSD, "serve", "-c", str(description)], fdnames=["https"]
    )
    proc = Proc(argv, pki / "serve.log")
    try:
        first = https_get(port, client_context(pki))[2]["cert"]
        kept = http.client.HTTPSConnection(
            "localhost", port, context=client_context(pki), timeout=20
        )
        kept.request("GET", "/")
        assert kept.getresponse().read() == b"hello\n"
        renew = subprocess.run(
            [*CPSYSD, "cert", "renew", "-c", str(description), "--force", "--no-restart"],
            capture_output=True,
            text=True,
            check=False,
        )
        assert renew.returncode == 0, renew.stderr
        os.kill(proc.pid, signal.SIGHUP)
        deadline = time.monotonic() + 20
        while https_get(port, client_context(pki))[2]["cert"] == first:  # type: ignore[comparison-overlap]
            assert time.monotonic() < deadline, proc.output()
            time.sleep(0.05)
        kept.request("GET", "/")  # the connection opened before the reload still works
        assert kept.getresponse().read() == b"hello\n"
        kept.close()
        new = https_get(port, client_context(pki))[2]["cert"]
        assert new["serialNumber"] != first["serialNumber"]  # type: ignore[index]
    finally:
        assert proc.stop() == 0, proc.output()
    assert "configuration and TLS files reloaded" in proc.output()
