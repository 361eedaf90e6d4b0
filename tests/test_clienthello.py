"""The ClientHello peek (runtime/clienthello.py): real ClientHellos, as OpenSSL writes them for
Python's ssl client (through a MemoryBIO, nothing on the network), and every way of breaking
them: truncated at each byte, lengths that point past their structure, a huge record, repeated
extensions, plain HTTP."""

from __future__ import annotations

import socket
import ssl

import pytest

from cpsysd.runtime.clienthello import (
    MALFORMED,
    MAX_RECORD,
    RECORD_HEADER,
    ClientHello,
    needed,
    parse_client_hello,
    peek_first_record,
)


def client_hello(server_name: str | None = "app.test", alpn: list[str] | None = None) -> bytes:
    """The first flight of a real TLS client: one record holding the ClientHello."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    if alpn is not None:
        context.set_alpn_protocols(alpn)
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = context.wrap_bio(incoming, outgoing, server_hostname=server_name)
    with pytest.raises(ssl.SSLWantReadError):
        tls.do_handshake()
    return outgoing.read()


def test_sni_and_alpn_of_a_real_client_hello() -> None:
    hello = client_hello("App.Test", ["acme-tls/1"])
    assert needed(hello) == len(hello)  # one record, nothing after it
    assert parse_client_hello(hello) == ClientHello("app.test", (b"acme-tls/1",))
    browser = parse_client_hello(client_hello("app.test", ["h2", "http/1.1"]))
    assert browser == ClientHello("app.test", (b"h2", b"http/1.1"))


def test_without_sni_or_alpn() -> None:
    assert parse_client_hello(client_hello(None)) == ClientHello(None, None)
    assert parse_client_hello(client_hello("app.test")) == ClientHello("app.test", None)


def test_every_truncation_is_malformed_or_incomplete() -> None:
    hello = client_hello("app.test", ["acme-tls/1"])
    for cut in range(len(hello)):
        part = hello[:cut]
        assert needed(part) > len(part)  # the gate waits for more
        assert parse_client_hello(part) == MALFORMED  # and would never act on a part


def test_lengths_past_their_structure_are_malformed() -> None:
    hello = bytearray(client_hello("app.test", ["acme-tls/1"]))
    # the handshake length (bytes 6..8) one more than the record holds
    longer = bytearray(hello)
    longer[6:9] = (len(hello) - 9 + 1).to_bytes(3, "big")
    assert parse_client_hello(bytes(longer)) == MALFORMED
    # every single-byte corruption: never an exception, and never the challenge by accident
    for i in range(RECORD_HEADER, len(hello)):
        broken = bytearray(hello)
        broken[i] ^= 0xFF
        parsed = parse_client_hello(bytes(broken))
        assert isinstance(parsed, ClientHello)


def test_a_huge_or_foreign_record_needs_nothing_more() -> None:
    huge = bytes([0x16, 3, 1]) + (MAX_RECORD + 1).to_bytes(2, "big") + b"\0" * 64
    assert needed(huge) == len(huge)  # no waiting for 16 KiB + 1
    assert parse_client_hello(huge) == MALFORMED
    http = b"GET / HTTP/1.1\r\nHost: app.test\r\n\r\n"
    assert needed(http) == len(http)
    assert parse_client_hello(http) == MALFORMED
    assert parse_client_hello(b"\x16\x03\x01\x00\x00") == MALFORMED  # an empty record


def test_a_repeated_extension_is_malformed() -> None:
    hello = client_hello("app.test", ["acme-tls/1"])
    # extensions block: the last two-byte length before the extensions; append a second ALPN
    alpn = b"\x00\x10\x00\x0d\x00\x0b\x0aacme-tls/1"
    body = hello[RECORD_HEADER + 4 :]
    ext_start = len(body) - _extensions_length(body) - 2
    extensions = body[ext_start + 2 :] + alpn
    new_body = body[:ext_start] + len(extensions).to_bytes(2, "big") + extensions
    handshake = b"\x01" + len(new_body).to_bytes(3, "big") + new_body
    record = hello[:3] + len(handshake).to_bytes(2, "big") + handshake
    assert parse_client_hello(record) == MALFORMED
    # the control: the same splice without the duplicate parses
    assert parse_client_hello(hello).alpn == (b"acme-tls/1",)


def _extensions_length(body: bytes) -> int:
    pos = 2 + 32
    pos += 1 + body[pos]
    pos += 2 + int.from_bytes(body[pos : pos + 2], "big")
    pos += 1 + body[pos]
    return int.from_bytes(body[pos : pos + 2], "big")


def test_peek_leaves_the_bytes_in_the_socket() -> None:
    hello = client_hello("app.test", ["acme-tls/1"])
    left, right = socket.socketpair()
    with left, right:
        right.setblocking(False)
        assert peek_first_record(right) == b""  # nothing yet: not an error, not a close
        left.sendall(hello[:10])
        assert peek_first_record(right) == hello[:10]
        left.sendall(hello[10:] + b"more records")
        assert peek_first_record(right) == hello  # the first record only
        assert right.recv(65536) == hello + b"more records"  # all still there for OpenSSL
        left.close()
        assert peek_first_record(right) is None
