"""tls-alpn-01 (RFC 8737) answered by ``cpsysd serve`` on its https listener, under the real
systemd-socket-activate: a client offering only ``acme-tls/1`` gets the challenge certificate,
every other client the normal one; and a certificate issued by Debian's pebble, whose VA
validates tls-alpn-01 for real against that listener (there is no plain listener at all), its
chain verified against pebble's root. The job is the real ``cpsysd cert renew`` process."""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import signal
import socket
import ssl
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from acmekit import Pebble, available, running_pebble
from cryptography import x509
from runtimekit import CPSYSD, Proc, free_port, socket_activate, wait_listening, write_app

from cpsysd.description.load import load_spec
from cpsysd.host.acmerenew import write_placeholder
from cpsysd.tls.x509 import Certificate, utc_now, verify_chain

HOST = "app.test"
ACME_IDENTIFIER = x509.ObjectIdentifier("1.3.6.1.5.5.7.1.31")


def _describe(tmp_path: Path, port: int, directory: str, ca_bundle: str = "") -> Path:
    tls = tmp_path / "tls"
    tls.mkdir(mode=0o700, exist_ok=True)
    bundle = f'acme_ca_bundle = "{ca_bundle}"\n' if ca_bundle else ""
    extra = (
        "[tls]\n"
        f'cert = "{tls}/cert.pem"\nkey = "{tls}/key.pem"\n'
        f'acme = "{directory}"\n{bundle}acme_challenge = "tls-alpn-01"\n'
        f'hosts = ["{HOST}"]\nacme_challenge_dir = "{tmp_path}/challenges"\n'
    )
    return write_app(tmp_path / "app", [f"127.0.0.1:{port}=https"], extra=extra)


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[int, Path, Proc]]:
    """``cpsysd serve`` on an https listener with a placeholder certificate."""
    port = free_port()
    description = _describe(tmp_path, port, "https://ca.test/dir")
    spec = load_spec(description)
    assert spec.tls is not None
    write_placeholder(spec.tls)
    argv = socket_activate(
        [f"127.0.0.1:{port}"], [*CPSYSD, "serve", "-c", str(description)], fdnames=["https"]
    )
    proc = Proc(argv, tmp_path / "serve.log")
    try:
        wait_listening(f"127.0.0.1:{port}")
        yield port, description, proc
    finally:
        proc.stop()


def _handshake(port: int, name: str, alpn: list[str] | None) -> tuple[x509.Certificate, str | None]:
    """The certificate the server presents and the protocol it picks."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    if alpn is not None:
        context.set_alpn_protocols(alpn)
    with (
        socket.create_connection(("127.0.0.1", port), timeout=20) as raw,
        context.wrap_socket(raw, server_hostname=name) as tls,
    ):
        der = tls.getpeercert(binary_form=True)
        assert der is not None
        return x509.load_der_x509_certificate(der), tls.selected_alpn_protocol()


def _write_answer(tmp_path: Path, name: str, key_authorization: bytes) -> None:
    directory = tmp_path / "challenges" / "tls-alpn-01"
    directory.mkdir(parents=True, exist_ok=True)
    (directory / name).write_bytes(key_authorization + b"\n")


def test_only_an_acme_tls_client_gets_the_challenge_certificate(
    tmp_path: Path, served: tuple[int, Path, Proc]
) -> None:
    port, _, proc = served
    authorization = b"tok-EN_1.thumbprint"
    _write_answer(tmp_path, HOST, authorization)
    normal, picked = _handshake(port, HOST, ["h2", "http/1.1"])
    assert picked == "http/1.1"
    assert ACME_IDENTIFIER not in [ext.oid for ext in normal.extensions]

    challenge, picked = _handshake(port, HOST.upper(), ["acme-tls/1"])
    assert picked == "acme-tls/1"
    extension = challenge.extensions.get_extension_for_oid(ACME_IDENTIFIER)
    assert extension.critical
    digest = hashlib.sha256(authorization).digest()
    assert extension.value.value == b"\x04\x20" + digest  # a DER OCTET STRING of the SHA-256
    names = challenge.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.DNSName) == [HOST]
    assert challenge.public_key() != normal.public_key()
    # one line for the journal (stderr here): the name and the validator's address
    assert f"answered the tls-alpn-01 validation for {HOST} to 127.0.0.1:" in proc.output()

    # acme-tls/1 among others (no validator does that), or for a name without a pending
    # challenge, or without SNI: the normal certificate
    for name, alpn in [(HOST, ["acme-tls/1", "http/1.1"]), ("other.test", ["acme-tls/1"])]:
        cert, _ = _handshake(port, name, alpn)
        assert cert == normal, (name, alpn)
    assert proc.output().count("answered the tls-alpn-01") == 1  # only the one answered
    # and the app is served as before on a normal connection
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    conn = http.client.HTTPSConnection("127.0.0.1", port, context=context, timeout=20)
    conn.request("GET", "/")
    assert conn.getresponse().read() == b"hello\n"
    conn.close()
    assert proc.popen.poll() is None, proc.output()


def test_the_challenge_connection_is_closed_after_the_handshake(
    tmp_path: Path, served: tuple[int, Path, Proc]
) -> None:
    port, _, _ = served
    _write_answer(tmp_path, HOST, b"tok.thumb")
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.set_alpn_protocols(["acme-tls/1"])
    with (
        socket.create_connection(("127.0.0.1", port), timeout=20) as raw,
        context.wrap_socket(raw, server_hostname=HOST) as tls,
    ):
        assert tls.selected_alpn_protocol() == "acme-tls/1"
        received = b""
        # the server closes right after the handshake: a reset or an unclean close is no data
        with contextlib.suppress(ssl.SSLError, ConnectionResetError, BrokenPipeError):
            tls.sendall(b"GET / HTTP/1.1\r\nHost: app.test\r\n\r\n")
            received = tls.recv(1024)
        assert received == b""  # RFC 8737 section 3: no application data on this connection


def test_a_trickled_client_hello_is_read_whole(
    tmp_path: Path, served: tuple[int, Path, Proc]
) -> None:
    """A ClientHello in pieces: the gate waits for the whole record, then answers."""
    port, _, _ = served
    _write_answer(tmp_path, HOST, b"tok.thumb")
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.set_alpn_protocols(["acme-tls/1"])
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = context.wrap_bio(incoming, outgoing, server_hostname=HOST)
    with pytest.raises(ssl.SSLWantReadError):
        tls.do_handshake()
    hello = outgoing.read()
    with socket.create_connection(("127.0.0.1", port), timeout=20) as raw:
        for start in range(0, len(hello), 100):
            raw.sendall(hello[start : start + 100])
            time.sleep(0.02)
        while True:
            try:
                tls.do_handshake()
                break
            except ssl.SSLWantReadError:
                if outgoing.pending:
                    raw.sendall(outgoing.read())
                data = raw.recv(65536)
                assert data, "the server closed during the handshake"
                incoming.write(data)
        assert tls.selected_alpn_protocol() == "acme-tls/1"


pebble_only = pytest.mark.skipif(not available(), reason="pebble is not installed")


@pebble_only
@pytest.mark.slow
def test_issuance_over_tls_alpn_01_answered_by_the_runtime(tmp_path: Path) -> None:
    port = free_port()
    with running_pebble(tmp_path / "pebble", tls_port=port) as pebble:
        description = _describe(tmp_path, port, pebble.directory, str(pebble.ca_bundle))
        spec = load_spec(description)
        assert spec.tls is not None
        write_placeholder(spec.tls)  # as install does: the app must start to answer the CA
        argv = socket_activate(
            [f"127.0.0.1:{port}"], [*CPSYSD, "serve", "-c", str(description)], fdnames=["https"]
        )
        proc = Proc(argv, tmp_path / "serve.log")
        try:
            wait_listening(f"127.0.0.1:{port}")
            done = subprocess.run(
                [*CPSYSD, "cert", "renew", "-c", str(description), "--no-restart"],
                capture_output=True,
                text=True,
                timeout=120,
            )
            assert done.returncode == 0, done.stderr + proc.output()
            assert "renewed" in done.stdout
            # tls-alpn-01 it was: nothing listens on pebble's http-01 port, and its DNS server
            # holds no dns-01 record; the job wrote the answer where the runtime reads it
            leaf = _verify_against_pebble(pebble, tmp_path / "tls" / "cert.pem")
            assert leaf.hosts == (f"DNS:{HOST}",)
            assert not list((tmp_path / "challenges" / "tls-alpn-01").iterdir())
            # SIGHUP (what the job's restart does): new connections get the CA's certificate
            proc.signal(signal.SIGHUP)
            _wait_for_served(port, leaf.x509)
        finally:
            proc.stop()


def _verify_against_pebble(pebble: Pebble, cert: Path) -> Certificate:
    chain = Certificate.list_from_pem(cert.read_bytes(), str(cert))
    verify_chain(chain, Certificate.list_from_pem(pebble.root_pem(), "pebble root"), utc_now())
    root = cert.parent / "pebble-root.pem"
    root.write_bytes(pebble.root_pem())
    check = subprocess.run(
        ["openssl", "verify", "-purpose", "sslserver", "-verify_hostname", HOST,
         "-CAfile", str(root), "-untrusted", str(cert), str(cert)],
        capture_output=True, text=True,
    )  # fmt: skip
    assert check.returncode == 0, check.stdout + check.stderr
    return chain[0]


def _wait_for_served(port: int, expected: x509.Certificate, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while True:
        served, _ = _handshake(port, HOST, ["http/1.1"])
        if served == expected:
            return
        assert time.monotonic() < deadline, "the reload did not bring the new certificate"
        time.sleep(0.2)
