"""tls-alpn-01 answers (RFC 8737) on the app's TLS listener.

The renewal job (root, :mod:`cpsysd.tls.acme`) writes the key authorization of each pending
tls-alpn-01 challenge to ``DIR/tls-alpn-01/NAME`` (world-readable like an http-01 answer: RFC
8555 section 8.3 sends it in the clear). A connection whose ClientHello (peeked by the gate,
:mod:`cpsysd.runtime.clienthello`) offers exactly ALPN ``acme-tls/1`` for a NAME with such a
file is handshaken with :func:`challenge_context`: a self-signed certificate for NAME carrying
the critical acmeIdentifier extension (the SHA-256 of the key authorization), negotiating
``acme-tls/1``; the gate closes it after the handshake (RFC 8737 section 3). Every other
connection, an ``acme-tls/1`` one for a name without a challenge included, gets the normal
certificate.

Why the certificate is made here and not by the job: its key must stay out of reach of other
users, and the DynamicUser that runs this process has no user id while the job runs (it gets one
when a connection starts the service), so no file mode lets it read a key and keeps others out.
Made in-process, the throw-away key never touches a disk; what the job writes is public anyway.
"""

from __future__ import annotations

import datetime
import hashlib
import os
import socket
import ssl
from typing import Any

from cpsysd.runtime.acme import read_small_file
from cpsysd.runtime.acmelog import AnswerLog, default_log, peer_of
from cpsysd.runtime.clienthello import ClientHello, needed, parse_client_hello, peek_first_record

ACME_TLS = b"acme-tls/1"  # RFC 8737 section 6.2
SUBDIRECTORY = "tls-alpn-01"
# id-pe-acmeIdentifier, RFC 8737 section 6.1
ACME_IDENTIFIER_OID = "1.3.6.1.5.5.7.1.31"
_CACHE_SIZE = 16  # contexts kept: one per pending (name, key authorization)


def wants_challenge(hello: ClientHello) -> bool:
    """RFC 8737 section 3: the validator offers ``acme-tls/1`` and nothing else."""
    return hello.server_name is not None and hello.alpn == (ACME_TLS,)


def challenge_certificate(name: str, key_authorization: bytes) -> tuple[bytes, bytes]:
    """``(key PEM, certificate PEM)``: a throw-away P-256 key and a self-signed certificate for
    ``name`` whose critical acmeIdentifier extension is the DER OCTET STRING of the SHA-256 of
    ``key_authorization`` (RFC 8737 section 3)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    digest = hashlib.sha256(key_authorization).digest()
    now = datetime.datetime.now(datetime.UTC)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .add_extension(
            x509.UnrecognizedExtension(
                x509.ObjectIdentifier(ACME_IDENTIFIER_OID),
                bytes([0x04, len(digest)]) + digest,  # OCTET STRING (32 bytes)
            ),
            critical=True,
        )
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return key_pem, certificate.public_bytes(serialization.Encoding.PEM)


class ChallengeContexts:
    """The contexts for pending challenges in ``directory``, made on first use and kept while
    the key authorization stays the same."""

    def __init__(self, directory: str, log: AnswerLog | None = None) -> None:
        self.directory = os.path.join(directory, SUBDIRECTORY)
        self.log = log or default_log()
        self._made: dict[tuple[str, bytes], ssl.SSLContext] = {}

    def context_for(self, hello: ClientHello) -> ssl.SSLContext | None:
        """The challenge context for this ClientHello, or None for a normal handshake."""
        if not wants_challenge(hello) or hello.server_name is None:
            return None
        name = hello.server_name
        # only a DNS name is a file name here: no "/", no "..", nothing empty
        answer = read_small_file(os.path.join(self.directory, name)) if _is_name(name) else None
        if answer is None:
            return None
        cached = self._made.get((name, answer))
        if cached is None:
            if len(self._made) >= _CACHE_SIZE:
                self._made.clear()
            cached = self._made[(name, answer)] = _context(*challenge_certificate(name, answer))
        return cached


def _is_name(name: str) -> bool:
    labels = name.split(".")
    return len(name) <= 253 and all(
        0 < len(label) <= 63 and label.replace("-", "").isalnum() and label.isascii()
        for label in labels
    )


def _context(key_pem: bytes, cert_pem: bytes) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2  # RFC 8737 section 4: TLS 1.2 or later
    context.set_alpn_protocols([ACME_TLS.decode()])
    # load_cert_chain() wants files: anonymous memory files, never on a disk
    fds: list[int] = []
    try:
        for pem in (cert_pem, key_pem):
            fd = os.memfd_create("cpsysd-acme-tls", os.MFD_CLOEXEC)
            fds.append(fd)
            os.write(fd, pem)
        context.load_cert_chain(f"/proc/self/fd/{fds[0]}", f"/proc/self/fd/{fds[1]}")
    finally:
        for fd in fds:
            os.close(fd)
    return context


def choose_context(sock: Any, challenges: ChallengeContexts) -> str | None:
    """Peek at the ClientHello of ``sock`` (an SSLSocket before its handshake, non-blocking):
    ``"challenge"`` after switching it to a challenge context, ``"normal"`` when it keeps its
    context, ``""`` while the first record is incomplete (wait for the socket to be readable),
    None when the peer closed.

    While waiting, SO_RCVLOWAT is the size of the record (socket(7)): epoll reports the socket
    readable only once that much has arrived (or at EOF), so a trickled ClientHello costs no
    spinning on bytes that MSG_PEEK leaves in the buffer. The gate's header deadline bounds
    the wait."""
    head = peek_first_record(sock)
    if head is None:
        return None
    want = needed(head)
    if len(head) < want:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT, want)
        return ""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT, 1)
    hello = parse_client_hello(head)
    context = challenges.context_for(hello)
    if context is None:
        return "normal"
    # OpenSSL takes certificate and ALPN from the new SSL_CTX (SSL_set_SSL_CTX, as an SNI
    # callback does); nothing has been read from the socket yet
    sock.context = context
    challenges.log.answered("tls-alpn-01", hello.server_name or "-", peer_of(sock))
    return "challenge"
