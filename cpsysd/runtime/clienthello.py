"""The server name (SNI) and ALPN list of a TLS ClientHello, read before the handshake.

Python's ssl chooses a certificate by SNI at most (``sni_callback``); the ALPN callback runs
after the certificate is chosen. A tls-alpn-01 challenge (RFC 8737 section 3) must get its own
certificate when the ClientHello offers ALPN ``acme-tls/1``, so the gate peeks at the first TLS
record before OpenSSL reads it and picks the context from what it says.

Bounded by construction: one record (RFC 8446 section 5.1: at most 2^14 bytes of plaintext),
the ClientHello in that record only (a ClientHello split over records, legal but never sent by
a browser or an ACME validator, is a normal connection), lengths checked before every slice.
Anything malformed is :data:`MALFORMED`, and the connection proceeds as a normal one: OpenSSL
then judges it as it would have without us.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass

RECORD_HEADER = 5
MAX_RECORD = 1 << 14  # RFC 8446 section 5.1 (TLSPlaintext.length)
_HANDSHAKE = 0x16
_CLIENT_HELLO = 1
_SERVER_NAME = 0  # RFC 6066 section 3
_HOST_NAME = 0
_ALPN = 16  # RFC 7301 section 3.1


@dataclass(frozen=True)
class ClientHello:
    server_name: str | None  # the host_name of SNI, lower-cased; None without one
    alpn: tuple[bytes, ...] | None  # the offered protocols in order; None without the extension


MALFORMED = ClientHello(None, None)  # not a ClientHello we can read: a normal connection


class _Short(Exception):
    """A length points past the end of its enclosing structure."""


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data, self.pos = data, 0

    def take(self, size: int) -> bytes:
        if size > len(self.data) - self.pos:
            raise _Short
        chunk = self.data[self.pos : self.pos + size]
        self.pos += size
        return chunk

    def number(self, size: int) -> int:
        return int.from_bytes(self.take(size), "big")

    def vector(self, length_size: int) -> _Reader:
        return _Reader(self.take(self.number(length_size)))

    def done(self) -> bool:
        return self.pos == len(self.data)


def needed(head: bytes) -> int:
    """How many bytes the first record needs in all (header included), judged from what has
    arrived; at least :data:`RECORD_HEADER`. A header that is not a handshake record, or
    claims more than :data:`MAX_RECORD`, needs nothing more (it is parsed as malformed)."""
    if len(head) < RECORD_HEADER:
        return RECORD_HEADER
    length = int.from_bytes(head[3:5], "big")
    if head[0] != _HANDSHAKE or length > MAX_RECORD:
        return len(head)
    return RECORD_HEADER + length


def parse_client_hello(record: bytes) -> ClientHello:
    """SNI and ALPN of the ClientHello in ``record`` (a whole first TLS record)."""
    try:
        return _parse(_Reader(record))
    except (_Short, UnicodeDecodeError):
        return MALFORMED


def _parse(outer: _Reader) -> ClientHello:
    if outer.number(1) != _HANDSHAKE:
        return MALFORMED
    outer.take(2)  # legacy_record_version: any (RFC 8446 section 5.1)
    record = outer.vector(2)
    if len(record.data) > MAX_RECORD or record.number(1) != _CLIENT_HELLO:
        return MALFORMED
    hello = record.vector(3)
    hello.take(2 + 32)  # legacy_version, random
    hello.vector(1)  # legacy_session_id
    hello.vector(2)  # cipher_suites
    hello.vector(1)  # legacy_compression_methods
    if hello.done():
        return ClientHello(None, None)  # no extensions at all (TLS 1.0 style)
    extensions = hello.vector(2)
    server_name: str | None = None
    alpn: tuple[bytes, ...] | None = None
    seen: set[int] = set()
    while not extensions.done():
        kind, body = extensions.number(2), extensions.vector(2)
        if kind in seen:  # RFC 8446 section 4.2: at most one of each; OpenSSL refuses it too
            return MALFORMED
        seen.add(kind)
        if kind == _SERVER_NAME:
            server_name = _server_name(body)
        elif kind == _ALPN:
            alpn = _protocols(body)
    return ClientHello(server_name, alpn)


def _server_name(body: _Reader) -> str | None:
    names = body.vector(2)
    while not names.done():
        kind, name = names.number(1), names.vector(2).data
        if kind == _HOST_NAME:
            return name.decode("ascii").lower().rstrip(".")
    return None


def _protocols(body: _Reader) -> tuple[bytes, ...]:
    names = body.vector(2)
    offered = []
    while not names.done():
        offered.append(names.vector(1).data)
    return tuple(offered)


def peek_first_record(sock: socket.socket) -> bytes | None:
    """The bytes of the first record that have arrived, left in the socket for OpenSSL; None
    when the peer closed. Never blocks (the gate's socket is non-blocking here)."""
    try:
        # socket.socket.recv, not SSLSocket.recv: the raw bytes, before OpenSSL reads them
        data = socket.socket.recv(sock, RECORD_HEADER + MAX_RECORD, socket.MSG_PEEK)
    except (BlockingIOError, InterruptedError):
        return b""
    except OSError:
        return None
    if not data:
        return None
    return data[: needed(data)]
