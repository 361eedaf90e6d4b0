"""The TLS side of ``cpsysd serve``: an :class:`ssl.SSLContext` per TLS listener, served through
cheroot's builtin ssl adapter, re-read on SIGHUP.

Where the files come from: the generated service passes them as credentials
(``LoadCredential=tls-cert:...``, ``tls-key``, ``tls-chain``, systemd.exec(5)), so a DynamicUser
service can read them: ``$CREDENTIALS_DIRECTORY/tls-cert`` etc. (mode 0440 there, owned by root
with the service's group; only read, never checked for 0600). Without the credentials directory
(development, other supervisors) the paths of the description's ``[tls]`` table are used. An
encrypted key's passphrase is read from the credential ``tls-key-passphrase``; OpenSSL is never
allowed to prompt on a terminal.

Settings (Mozilla "intermediate"): TLS 1.2 minimum, TLS 1.2 limited to ECDHE with AES-GCM or
ChaCha20-Poly1305 (TLS 1.3 suites are all strong), no compression, no renegotiation, the chain
sent after the certificate.
"""

from __future__ import annotations

import os
import ssl
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cheroot.ssl import Adapter
from cheroot.ssl.builtin import BuiltinSSLAdapter

from cpsysd.credentials import (
    CREDENTIAL_CERT,
    CREDENTIAL_CHAIN,
    CREDENTIAL_KEY,
    CREDENTIAL_PASSPHRASE,
    passphrase_from_file,
)
from cpsysd.description.load import TLSConfig
from cpsysd.errors import TLSError
from cpsysd.records import record

if TYPE_CHECKING:
    from cpsysd.runtime.alpn import ChallengeContexts

TLS12_CIPHERS = ":".join(
    (
        "ECDHE-ECDSA-AES128-GCM-SHA256",
        "ECDHE-RSA-AES128-GCM-SHA256",
        "ECDHE-ECDSA-AES256-GCM-SHA384",
        "ECDHE-RSA-AES256-GCM-SHA384",
        "ECDHE-ECDSA-CHACHA20-POLY1305",
        "ECDHE-RSA-CHACHA20-POLY1305",
    )
)


@record
class TLSFiles:
    """Where the certificate, key, optional chain and optional passphrase are read from."""

    cert: str
    key: str
    chain: str | None = None
    passphrase: str | None = None
    from_credentials: bool = False


def tls_files(tls: TLSConfig | None) -> TLSFiles:
    """The files to load: credentials when ``$CREDENTIALS_DIRECTORY`` has ``tls-cert``, else
    the description's ``[tls]`` paths. Raises TLSError when neither exists."""
    directory = os.environ.get("CREDENTIALS_DIRECTORY")
    if directory and (Path(directory) / CREDENTIAL_CERT).exists():
        base = Path(directory)
        chain = base / CREDENTIAL_CHAIN
        passphrase = base / CREDENTIAL_PASSPHRASE
        return TLSFiles(
            cert=str(base / CREDENTIAL_CERT),
            key=str(base / CREDENTIAL_KEY),
            chain=str(chain) if chain.exists() else None,
            passphrase=str(passphrase) if passphrase.exists() else None,
            from_credentials=True,
        )
    if tls is None:
        raise TLSError(
            "a TLS listener needs a certificate, but the description has no [tls] table",
            'add [tls] cert = "..." key = "..." (cpsysd cert selfsigned makes them)',
        )
    return TLSFiles(cert=tls.cert, key=tls.key, chain=tls.chain, passphrase=tls.passphrase_file)


def _read(path: str, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as err:
        raise TLSError(
            f"cannot read the TLS {what} {path}: {err.strerror or err}",
            "check the path and that the service may read it (LoadCredential= does this)",
        ) from None


def server_context(files: TLSFiles) -> ssl.SSLContext:
    """A server-side context with the certificate (+ chain) and key loaded; raises TLSError
    naming the file when anything does not load or does not match."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_ciphers(TLS12_CIPHERS)
    context.options |= (
        ssl.OP_NO_COMPRESSION | ssl.OP_NO_RENEGOTIATION | ssl.OP_CIPHER_SERVER_PREFERENCE
    )
    context.set_alpn_protocols(["http/1.1"])
    pem = _read(files.cert, "certificate")
    if files.chain is not None:
        pem = pem.rstrip(b"\n") + b"\n" + _read(files.chain, "chain")
    passphrase = None
    if files.passphrase:
        passphrase = passphrase_from_file(_read(files.passphrase, "key passphrase"))
    _read(files.key, "key")  # a clear message for a missing or unreadable key first

    def password() -> bytes:
        if passphrase is None:
            raise TLSError(
                f"the TLS key {files.key} is encrypted",
                f"pass its passphrase as the credential {CREDENTIAL_PASSPHRASE}"
                " (or [tls] passphrase_file when not run by systemd)",
            )
        return passphrase

    # load_cert_chain() wants a file: the certificate and chain (public material) go through
    # an anonymous memory file; the key is read from its own file and never copied.
    memfd = os.memfd_create("cpsysd-tls-chain", os.MFD_CLOEXEC)
    try:
        os.write(memfd, pem)
        context.load_cert_chain(f"/proc/self/fd/{memfd}", files.key, password=password)
    except ssl.SSLError as err:
        if passphrase is not None and err.reason is None:  # OpenSSL's bare "PEM lib"
            raise TLSError(
                f"cannot decrypt the TLS key {files.key}: wrong passphrase",
                f"check the credential {CREDENTIAL_PASSPHRASE}",
            ) from None
        raise TLSError(
            f"cannot use {files.cert} with {files.key}: {err.reason or err}",
            "check that the key belongs to the certificate (cpsysd cert check)",
        ) from None
    finally:
        os.close(memfd)
    return context


class ContextSSLAdapter(BuiltinSSLAdapter):
    """cheroot's builtin adapter around a ready context. Its own constructor would load the
    files again (and let OpenSSL prompt for a passphrase); replacing :attr:`context` swaps the
    certificate for new connections only, which is how a reload keeps open ones."""

    def __init__(
        self, context: ssl.SSLContext, files: TLSFiles, challenges: ChallengeContexts | None = None
    ) -> None:
        Adapter.__init__(self, files.cert, files.key, files.chain)
        self.context = context
        self._server_env: dict[str, Any] = {}
        # tls-alpn-01 answers, peeked for by the gate before the handshake (alpn.py)
        self.challenges = challenges

    def wrap(self, sock: Any) -> tuple[ssl.SSLSocket, dict[str, Any]]:
        """The TLS socket without its handshake: cheroot ran the handshake in its accepting
        thread, blocking it for up to ``socket_timeout`` per silent client; gate.py runs it
        without blocking and fills in the WSGI environ entries afterwards."""
        return self.context.wrap_socket(sock, do_handshake_on_connect=False, server_side=True), {}


def make_adapter(tls: TLSConfig | None, alpn_challenges: str | None = None) -> ContextSSLAdapter:
    """Load the TLS files into an adapter for a :class:`~cpsysd.runtime.adapter.ListenerServer`;
    with ``alpn_challenges`` (a directory) it answers tls-alpn-01 challenges from there too."""
    files = tls_files(tls)
    challenges = None
    if alpn_challenges is not None:
        from cpsysd.runtime.alpn import ChallengeContexts

        challenges = ChallengeContexts(alpn_challenges)
    return ContextSSLAdapter(server_context(files), files, challenges)


def reload_adapter(adapter: ContextSSLAdapter, tls: TLSConfig | None) -> None:
    """Re-read the files into ``adapter`` (SIGHUP); on error the old context stays in use."""
    files = tls_files(tls)
    adapter.context = server_context(files)
    adapter.certificate, adapter.private_key, adapter.certificate_chain = (
        files.cert,
        files.key,
        files.chain,
    )
