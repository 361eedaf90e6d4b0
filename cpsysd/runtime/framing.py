"""Request framing that a hostile client cannot bend (RFC 9112 sections 5, 6 and 7).

cheroot's request parser, as measured on cheroot 11.1, lets a client decide where one request
ends and the next begins: a chunked body the app did not read is parsed as the next request
(request smuggling behind a proxy that passes chunked bodies on), a request with both
Transfer-Encoding and Content-Length is served, Content-Length and chunk sizes are read with
Python's lenient ``int()`` (``+5``, ``0x1b``, ``1_0``), repeated Content-Length fields silently
take the last value, and any number of header fields is accepted. :class:`GuardedRequest` is
CherryPy's request class with the framing decided once, strictly, and with every byte of a body
consumed (bounded) or the connection closed before the next request is read.
"""

from __future__ import annotations

import contextlib
import re
from typing import Any

from cheroot.errors import MaxSizeExceeded
from cheroot.server import ChunkedRFile, HTTPRequest, KnownLengthRFile

CRLF = b"\r\n"
# At most this many header fields (and as many trailer fields), like nginx's and Apache's
# default of 100 (LimitRequestFields); 40,000 were accepted before, each one a dict entry.
MAX_HEADER_COUNT = 100
# Bytes of a body the app left unread that are read and thrown away so that the connection can
# serve its next request; a larger rest closes the connection instead (what nginx's
# ngx_http_discard_request_body does, bounded here).
DRAIN_LIMIT = 256 * 1024
_PIECE = 64 * 1024
_LINE_MAX = 4096  # a chunk-size or trailer line longer than this is refused, not buffered

# RFC 9110 5.6.2 token; RFC 9112 7.1 chunk-size [ chunk-ext ] (BWS before ';' allowed).
_TOKEN = rb"[!#$%&'*+.^_`|~0-9A-Za-z-]+"
_FIELD_NAME = re.compile(_TOKEN)
_CHUNK_SIZE = re.compile(rb"([0-9A-Fa-f]{1,16})[ \t]*(?:;[^\r\n]*)?\r\n")
_DIGITS = re.compile(rb"[0-9]{1,18}")
_COMMA_JOINED = frozenset(
    {b"Accept", b"Accept-Charset", b"Accept-Encoding", b"Accept-Language", b"Cache-Control"}
    | {b"Connection", b"Expect", b"If-Match", b"If-None-Match", b"Pragma", b"Te", b"Trailer"}
    | {b"Transfer-Encoding", b"Upgrade", b"Vary", b"Via", b"Warning"}
)


class Refusal(Exception):
    """The request cannot be served on this connection: answer ``status`` and close."""

    def __init__(self, status: str, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


def read_fields(rfile: Any, fields: dict[bytes, bytes], limit: int) -> None:
    """Read header (or trailer) field lines up to the empty line into ``fields``.

    Refuses what lets two parsers disagree about the message: a field line without a colon, a
    field name that is not a token (so no whitespace before the colon, RFC 9112 5.1), obs-fold
    continuation lines (5.2; cheroot replaced the value with the continuation), a Content-Length
    repeated with a different value (RFC 9110 8.6), and more than ``limit`` fields (431)."""
    count = 0
    while True:
        line = rfile.readline()
        if line == CRLF:
            return
        if not line.endswith(CRLF):
            raise Refusal("400 Bad Request", "Illegal end of headers.")
        count += 1
        if count > limit:
            raise Refusal(
                "431 Request Header Fields Too Large",
                f"More than {limit} header fields.",
            )
        name, colon, value = line[:-2].partition(b":")
        if not colon or not _FIELD_NAME.fullmatch(name):
            raise Refusal("400 Bad Request", "Illegal header line.")
        key = name.title()
        value = value.strip(b" \t")
        existing = fields.get(key)
        if existing is not None:
            if key == b"Content-Length":
                if existing != value:
                    raise Refusal("400 Bad Request", "Conflicting Content-Length fields.")
            elif key in _COMMA_JOINED:
                value = existing + b", " + value
        fields[key] = value


def body_framing(headers: dict[bytes, bytes], protocol: str) -> int | None:
    """The body's length from the request headers, or None for a chunked body (RFC 9112 6.3).

    Refused (and the connection closed): Transfer-Encoding in an HTTP/1.0 request (6.1 says
    its framing is faulty), Transfer-Encoding with Content-Length, a Transfer-Encoding whose
    final coding is not ``chunked`` or that applies chunked twice (400), another coding
    before a final chunked (501, not implemented), a Content-Length that is not digits."""
    te = headers.get(b"Transfer-Encoding")
    if te is not None:
        if protocol == "HTTP/1.0":
            raise Refusal("400 Bad Request", "Transfer-Encoding in an HTTP/1.0 request.")
        if b"Content-Length" in headers:
            raise Refusal("400 Bad Request", "Both Transfer-Encoding and Content-Length.")
        codings = [coding.strip(b" \t").lower() for coding in te.split(b",")]
        if codings[-1] != b"chunked" or codings.count(b"chunked") != 1:
            raise Refusal("400 Bad Request", "Transfer-Encoding must end in one chunked.")
        if len(codings) > 1:
            raise Refusal("501 Not Implemented", "Only the chunked transfer coding is supported.")
        return None
    length = headers.get(b"Content-Length")
    if length is None:
        return 0
    if not _DIGITS.fullmatch(length):
        raise Refusal("400 Bad Request", "Malformed Content-Length Header.")
    return int(length)


class StrictChunkedRFile(ChunkedRFile):
    """cheroot's chunked body reader with strict chunk-size lines (cheroot used ``int(x, 16)``,
    which takes ``0x1b``, ``+1b`` or ``1_b``: sizes a proxy reads differently), its trailer
    section read and checked, and :meth:`discard` for the rest of a body the app left."""

    def __init__(self, rfile: Any, maxlen: int) -> None:
        super().__init__(rfile, maxlen)
        self.finished = False  # last chunk and trailer section read: the message has ended
        self.broken = False  # a read failed part-way

    def _size_line(self) -> int:
        line = self.rfile.readline(_LINE_MAX)
        self.bytes_read += len(line)
        match = _CHUNK_SIZE.fullmatch(line)
        if match is None:
            raise ValueError(f"Bad chunked transfer size: {line[:40]!r}")
        return int(match.group(1), 16)

    def _fetch(self) -> None:
        if self.closed:
            return
        try:
            self._fetch_chunk()
        except Exception:
            self.broken = True  # the stream's position is unknown: it must not be parsed on
            raise

    def _fetch_chunk(self) -> None:
        size = self._size_line()
        if size == 0:
            self.closed = True
            self._read_trailers()
            return
        if self.maxlen and self.bytes_read + size > self.maxlen:
            # cheroot's type (cheroot raised a bare IOError here): CherryPy answers it with 413
            raise MaxSizeExceeded("Request Entity Too Large", self.maxlen)
        chunk = self.rfile.read(size)
        self.bytes_read += len(chunk)
        if len(chunk) != size or self.rfile.read(2) != CRLF:
            raise ValueError("Bad chunked transfer coding (chunk shorter than its size)")
        self.buffer += chunk

    def _read_trailers(self) -> None:
        # cheroot left the trailer section in the stream, where it was parsed as the next
        # request: "0\r\nGET /x HTTP/1.1\r\n..." smuggled one even when the app read the body.
        try:
            read_fields(_BoundedLines(self.rfile), {}, MAX_HEADER_COUNT)
        except Refusal as refusal:
            raise ValueError(f"Bad trailer section: {refusal.reason}") from None
        self.finished = True

    def discard(self, budget: int) -> bool:
        """Read and drop the rest of the body, at most ``budget`` bytes, never more than one
        piece in memory. True when the message has ended; False (the connection must close)
        when the rest is larger or malformed."""
        if self.broken:
            return False
        self.buffer = b""
        start = self.bytes_read
        while not self.closed:
            size = self._size_line()
            if size == 0:
                self.closed = True
                break
            if self.bytes_read - start + size > budget:
                return False
            self.bytes_read += size
            while size > 0:
                piece = self.rfile.read(min(size, _PIECE))
                if not piece:
                    return False
                size -= len(piece)
            if self.rfile.read(2) != CRLF:
                return False
        if not self.finished:
            self._read_trailers()
        return True


class _BoundedLines:
    """readline() of a stream, each line at most _LINE_MAX bytes (a longer one is refused)."""

    def __init__(self, rfile: Any) -> None:
        self.rfile = rfile

    def readline(self) -> bytes:
        line: bytes = self.rfile.readline(_LINE_MAX)
        return line


def _discard_known_length(body: KnownLengthRFile, budget: int) -> bool:
    if body.remaining > budget:
        return False
    while body.remaining > 0:
        if not body.read(min(body.remaining, _PIECE)):
            return False
    return True


_Request: Any = HTTPRequest  # untyped as CherryPy's CPWSGIHTTPRequest was


class _HeldBytes:
    """Stands in for a connection's writer while cheroot writes a header block."""

    def __init__(self) -> None:
        self.data = b""

    def write(self, data: bytes) -> int:
        self.data += data
        return len(data)


class GuardedRequest(_Request):  # type: ignore[misc]
    """CherryPy's request (cheroot's in proxy mode, as CherryPy's CPWSGIHTTPRequest, without
    importing CherryPy) with strict framing: see the module docstring. The limits come from
    the server: ``max_request_header_count`` and ``max_request_body_size``."""

    def __init__(self, server: Any, conn: Any) -> None:
        super().__init__(server, conn, proxy_mode=True)

    rfile: Any  # the header reader, then the body reader; cheroot's attribute is untyped
    _body_checked = False
    _held = b""  # the response's header block, not sent yet (send_headers)

    def read_request_headers(self) -> bool:
        """cheroot's method with the header count capped and the framing decided strictly."""
        try:
            limit = getattr(self.server, "max_request_header_count", MAX_HEADER_COUNT)
            read_fields(self.rfile, self.inheaders, limit)
            length = body_framing(self.inheaders, self.response_protocol)
        except Refusal as refusal:
            self.refuse(refusal.status, refusal.reason)
            return False
        self.chunked_read = length is None
        self._length = length or 0
        maximum = self.server.max_request_body_size
        if maximum and length is not None and length > maximum:
            # before the body is read and before any "100 Continue"
            self.conn.linger = True
            self.simple_response(
                "413 Request Entity Too Large",
                "The entity sent with the request exceeds the maximum allowed bytes.",
            )
            return False
        options = {
            o.strip(b" \t") for o in self.inheaders.get(b"Connection", b"").lower().split(b",")
        }
        if self.response_protocol == "HTTP/1.1":
            self.close_connection = b"close" in options
        else:
            self.close_connection = b"keep-alive" not in options
        if self.inheaders.get(b"Expect", b"").lower() == b"100-continue":
            self.conn.wfile.write(self.server.protocol.encode("ascii") + b" 100 Continue\r\n\r\n")
        return True

    def refuse(self, status: str, reason: str) -> None:
        """Answer ``status`` with ``Connection: close``; the connection is closed after it."""
        self.close_connection = True
        self.conn.linger = True  # a body may follow the refused head
        body = reason.encode("ascii")
        self.conn.wfile.write(
            f"{self.server.protocol} {status}\r\nContent-Length: {len(body)}\r\n"
            "Content-Type: text/plain\r\nConnection: close\r\n\r\n".encode("ascii")
            + body
        )

    def respond(self) -> None:
        """cheroot's respond() with the strict body readers; afterwards a connection whose
        request body was not read to its end is closed, never parsed on."""
        maximum = self.server.max_request_body_size
        if self.chunked_read:
            self.rfile = StrictChunkedRFile(self.conn.rfile, maximum)
        else:
            self.rfile = KnownLengthRFile(self.conn.rfile, self._length)
        try:
            self.server.gateway(self).respond()
        except BaseException:
            # what cheroot had sent already: the header block, then the connection closes
            with contextlib.suppress(OSError):
                self._flush_held()
            raise
        if self.ready:
            self.ensure_headers_sent()
        # a response without a body (HEAD, 204, 304) has only its header block; a chunked
        # one ends with the last chunk: either goes out in the same send()
        self._flush_held(b"0\r\n\r\n" if self.chunked_write else b"")
        if not self.close_connection and not self._body_ended():
            self.close_connection = True

    def send_headers(self) -> None:
        """Before the status line: read the rest of the body (bounded), or decide to close,
        so that the response can say ``Connection: close``. The header block is held back and
        goes out with the first piece of the body (:meth:`write`), or at the end of
        :meth:`respond`: cheroot sent it on its own, one more send() (and poll()) per
        response, and a small response split in two segments."""
        if not self.close_connection and not self._body_ended():
            self.close_connection = True
        conn = self.conn
        wfile, conn.wfile = conn.wfile, _HeldBytes()
        try:
            super().send_headers()
        finally:
            held, conn.wfile = conn.wfile, wfile
        self._held = held.data

    def write(self, chunk: bytes) -> None:
        """cheroot's write(), with the held header block in front of the first piece."""
        held = self._held
        if self.chunked_write and chunk:
            chunk = b"%x\r\n%b\r\n" % (len(chunk), chunk)
        if held:
            self._held = b""
            chunk = held + chunk
        if chunk:
            self.conn.wfile.write(chunk)

    def _flush_held(self, tail: bytes = b"") -> None:
        held, self._held = self._held, b""
        if held or tail:
            self.conn.wfile.write(held + tail)

    def _body_ended(self) -> bool:
        """True when the body has been read to its end, reading (at most DRAIN_LIMIT bytes of)
        what the app left; False when it could not be: the connection must then close."""
        if self._body_checked:
            return True
        body = self.rfile
        try:
            if isinstance(body, StrictChunkedRFile):
                ended = body.finished or body.discard(DRAIN_LIMIT)
            elif isinstance(body, KnownLengthRFile):
                ended = _discard_known_length(body, DRAIN_LIMIT)
            else:
                ended = False
        except (OSError, ValueError, Refusal):
            ended = False
        self._body_checked = ended
        return ended
