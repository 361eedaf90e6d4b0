"""A CA's renewalInfo endpoint (ARI, RFC 9773) on loopback, for the tests.

Why a stand-in: no ARI-capable CA runs on this machine (Debian 12's pebble 2.4 has no
renewalInfo, and Let's Encrypt is not reachable offline), so this is a small real HTTPS server
that serves an ACME directory naming its own ``renewalInfo`` (optionally merged into a real
pebble's directory, so orders still go to pebble) and answers ``renewalInfo/CERTID`` with
whatever the test sets, recording every path asked. Stopped (and any held answer released)
when the block ends, also when a test fails.
"""

from __future__ import annotations

import base64
import contextlib
import datetime
import http.server
import json
import os
import secrets
import ssl
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat

from cpsysd.tls import certfiles
from cpsysd.tls.pki import KeyType

HOLD_SECONDS = 15  # a "hang" answer: longer than the job's ARI timeout, bounded for the test


@dataclass
class Answer:
    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    hang: bool = False


@dataclass
class FakeAri:
    directory: str
    ca_bundle: Path
    base: str
    offer_ari: bool = True
    merge: dict[str, Any] = field(default_factory=dict)  # e.g. a real pebble's directory
    answer: Answer = field(default_factory=Answer)
    asked: list[str] = field(default_factory=list)  # renewalInfo paths, in order
    released: threading.Event = field(default_factory=threading.Event)

    def window(self, start: datetime.datetime, end: datetime.datetime, **headers: str) -> None:
        body = {"suggestedWindow": {"start": _rfc3339(start), "end": _rfc3339(end)}}
        self.answer = Answer(200, json.dumps(body).encode(), dict(headers))


def _rfc3339(when: datetime.datetime) -> str:
    return when.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _handler(fake: FakeAri) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

        def _send(self, status: int, body: bytes, headers: dict[str, str]) -> None:
            self.send_response(status)
            for name, value in {"Content-Type": "application/json", **headers}.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:
            if self.path == "/directory":
                document = dict(fake.merge)
                if fake.offer_ari:
                    document["renewalInfo"] = f"{fake.base}/renewal-info"
                self._send(200, json.dumps(document).encode(), {})
            elif self.path.startswith("/renewal-info/"):
                fake.asked.append(self.path.removeprefix("/renewal-info/"))
                if fake.answer.hang:
                    fake.released.wait(HOLD_SECONDS)
                    return
                self._send(fake.answer.status, fake.answer.body, fake.answer.headers)
            else:
                self._send(404, b"{}", {})

    return Handler


@contextlib.contextmanager
def running_fake_ari(workdir: Path) -> Iterator[FakeAri]:
    workdir.mkdir(parents=True, exist_ok=True)
    cert, key = workdir / "ari-https.pem", workdir / "ari-https.key"
    certfiles.make_self_signed(cert, key, ["127.0.0.1"], KeyType.EC_P256, 2)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), http.server.BaseHTTPRequestHandler)
    server.daemon_threads = True
    server.socket = context.wrap_socket(server.socket, server_side=True)
    base = f"https://127.0.0.1:{server.server_address[1]}"
    fake = FakeAri(f"{base}/directory", cert, base)
    server.RequestHandlerClass = _handler(fake)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield fake
    finally:
        fake.released.set()
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def issued_certificate(
    tls: Path, host: str, age: datetime.timedelta, left: datetime.timedelta
) -> x509.Certificate:
    """A CA-issued certificate for ``host`` in ``tls/cert.pem`` (key 0600 in ``key.pem``),
    with an authority key identifier and a serial whose top bit is set (so its DER integer
    needs a leading zero byte, the case RFC 9773's certID gets wrong most easily)."""
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, host)]))
        .issuer_name(x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "ARI test CA")]))
        .public_key(key.public_key())
        .serial_number(secrets.randbits(151) | (1 << 151))
        .not_valid_before(now - age)
        .not_valid_after(now + left)
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(host)]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    fd = os.open(tls / "key.pem", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()))
    (tls / "cert.pem").write_bytes(cert.public_bytes(Encoding.PEM))
    # The test's own record of the issuer's key identifier, taken from the CA key, not the leaf.
    (tls / "ca-key-id").write_bytes(
        x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()).digest
    )
    return cert


def _der_header(data: bytes, at: int) -> tuple[int, int, int]:
    """(tag, where the content starts, its length) of the DER element at ``at``."""
    tag, length, at = data[at], data[at + 1], at + 2
    if length & 0x80:
        count = length & 0x7F
        length, at = int.from_bytes(data[at : at + count], "big"), at + count
    return tag, at, length


def expected_cert_id(tls: Path, cert: x509.Certificate) -> str:
    """RFC 9773's certID computed apart from cpsysd: the issuer's key identifier recorded at
    issuance, and the serial's content bytes read straight out of the TBSCertificate's DER."""
    tbs = cert.tbs_certificate_bytes
    _, at, _ = _der_header(tbs, 0)  # TBSCertificate SEQUENCE
    tag, content, length = _der_header(tbs, at)
    if tag == 0xA0:  # [0] EXPLICIT version
        tag, content, length = _der_header(tbs, content + length)
    assert tag == 0x02, "the serial number is the TBSCertificate's first INTEGER"
    serial = tbs[content : content + length]

    def b64url(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).decode().rstrip("=")

    return f"{b64url((tls / 'ca-key-id').read_bytes())}.{b64url(serial)}"
