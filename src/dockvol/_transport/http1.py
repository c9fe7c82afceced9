"""A strict HTTP/1.1 request parser: request line, headers, Content-Length and chunked bodies.

Pure Python and incremental: ``feed`` bytes as they arrive, ``next`` returns each complete
request in order (pipelined requests included) or ``None`` while one is still incomplete.
Anything malformed or over a limit raises :class:`HTTPError` with the status to answer; the
connection is then closed, since the stream can no longer be trusted to be in step.

Strict on purpose: a plugin socket has one client (the engine, whose Go client writes clean
HTTP/1.1), so whatever a proxy-facing server must tolerate (bare LF, folded headers, spaces
before a colon, both Content-Length and Transfer-Encoding) is refused here: each is also a
way to smuggle one request inside another.
"""

from __future__ import annotations

import re
from typing import Final

#: Most header fields in one request (the engine sends five or six).
MAX_HEADERS: Final = 100
_MAX_CHUNK_LINE: Final = 1024  # hex size and extensions of one chunk

_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_TARGET = re.compile(rb"[\x21-\x7e]+")
_BAD_VALUE = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")
_HEX = re.compile(rb"[0-9A-Fa-f]{1,15}")
_VERSION = re.compile(rb"HTTP/[0-9]\.[0-9]")


class HTTPError(Exception):
    """The request cannot be served: answer ``status`` with ``message``, then close."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class Request:
    """One complete request. Header names are lowercased (as ASGI wants them)."""

    __slots__ = ("body", "headers", "keep_alive", "method", "target", "version")

    def __init__(
        self,
        method: str,
        target: bytes,
        version: str,
        headers: list[tuple[bytes, bytes]],
        body: bytes,
        keep_alive: bool,
    ) -> None:
        self.method = method
        self.target = target
        self.version = version  # "1.1" or "1.0"
        self.headers = headers
        self.body = body
        self.keep_alive = keep_alive


class _Head:
    """A request whose head is parsed and whose body is still arriving."""

    __slots__ = ("chunked", "expect_continue", "length", "request")

    def __init__(self, request: Request, length: int, chunked: bool, expect: bool) -> None:
        self.request = request
        self.length = length
        self.chunked = chunked
        self.expect_continue = expect


class Parser:
    """Requests out of a byte stream, in order, within ``max_head`` and ``max_body`` bytes."""

    def __init__(self, max_head: int, max_body: int) -> None:
        self.max_head = max_head
        self.max_body = max_body
        self._buf = bytearray()
        self._scanned = 0  # bytes of _buf already searched for the end of the head
        self._head: _Head | None = None
        # Chunked body in progress: parts so far, their size, and where the next chunk starts.
        self._parts: list[bytes] = []
        self._size = 0
        self._pos = 0
        self._trailer = -1  # >= 0: reading trailer fields; bytes of them so far

    def feed(self, data: bytes) -> None:
        self._buf += data

    @property
    def buffered(self) -> int:
        """Bytes received and not yet returned as part of a request."""
        return len(self._buf)

    @property
    def wants_continue(self) -> bool:
        """A head asked ``Expect: 100-continue`` and its body has not begun."""
        head = self._head
        return head is not None and head.expect_continue and not self._buf and not self._parts

    def continue_sent(self) -> None:
        if self._head is not None:
            self._head.expect_continue = False

    def next(self) -> Request | None:
        """The next complete request, or ``None`` until more bytes arrive."""
        if self._head is None:
            if not self._buf:
                return None
            self._head = self._parse_head()
            if self._head is None:
                return None
        head = self._head
        if head.chunked:
            body = self._chunked_body()
            if body is None:
                return None
        else:
            if len(self._buf) < head.length:
                return None
            body = bytes(self._buf[: head.length])
            del self._buf[: head.length]
        self._head = None
        head.request.body = body
        return head.request

    # -- the head ------------------------------------------------------------------------------
    def _parse_head(self) -> _Head | None:
        buf = self._buf
        end = buf.find(b"\r\n\r\n", max(self._scanned - 3, 0))
        if end < 0:
            if len(buf) > self.max_head:
                raise HTTPError(431, f"request head larger than {self.max_head} bytes")
            self._scanned = len(buf)
            return None
        if end > self.max_head:
            raise HTTPError(431, f"request head larger than {self.max_head} bytes")
        lines = bytes(buf[:end]).split(b"\r\n")
        del buf[: end + 4]
        self._scanned = 0

        line = lines[0]
        parts = line.split(b" ")
        if len(parts) != 3 or b"\n" in line or b"\r" in line:
            raise HTTPError(400, "malformed request line")
        raw_method, target, raw_version = parts
        if not _TOKEN.fullmatch(raw_method):
            raise HTTPError(400, "malformed method in the request line")
        if not _TARGET.fullmatch(target):
            raise HTTPError(400, "malformed request target")
        if raw_version == b"HTTP/1.1":
            version = "1.1"
        elif raw_version == b"HTTP/1.0":
            version = "1.0"
        elif _VERSION.fullmatch(raw_version):
            raise HTTPError(505, "HTTP version not supported")
        else:
            raise HTTPError(400, "malformed HTTP version in the request line")
        if len(lines) - 1 > MAX_HEADERS:
            raise HTTPError(431, f"more than {MAX_HEADERS} header fields")

        headers: list[tuple[bytes, bytes]] = []
        length: bytes | None = None
        encoding: bytes | None = None
        connection = b""
        expect = False
        for field in lines[1:]:
            name, sep, value = field.partition(b":")
            if not sep or not _TOKEN.fullmatch(name):
                # Covers folded lines, a space before the colon, and a bare LF or CR.
                raise HTTPError(400, "malformed header field")
            value = value.strip(b" \t")
            if _BAD_VALUE.search(value):
                raise HTTPError(400, "control character in a header value")
            name = name.lower()
            headers.append((name, value))
            if name == b"content-length":
                if length is not None and value != length:
                    raise HTTPError(400, "conflicting Content-Length headers")
                length = value
            elif name == b"transfer-encoding":
                encoding = value if encoding is None else encoding + b"," + value
            elif name == b"connection":
                connection = connection + b"," + value if connection else value
            elif name == b"expect":
                if value.lower() != b"100-continue":
                    raise HTTPError(417, "only 'Expect: 100-continue' is supported")
                expect = True

        chunked = False
        size = 0
        if encoding is not None:
            if length is not None:
                raise HTTPError(400, "both Content-Length and Transfer-Encoding")
            if version == "1.0":
                raise HTTPError(400, "Transfer-Encoding in an HTTP/1.0 request")
            if encoding.lower().replace(b" ", b"") != b"chunked":
                raise HTTPError(501, "only 'Transfer-Encoding: chunked' is supported")
            chunked = True
        elif length is not None:
            if not length.isdigit() or len(length) > 15:
                raise HTTPError(400, "malformed Content-Length")
            size = int(length)
            if size > self.max_body:
                raise HTTPError(413, f"request body larger than {self.max_body} bytes")

        tokens = {t.strip() for t in connection.lower().split(b",")} if connection else set()
        if version == "1.1":
            keep_alive = b"close" not in tokens
        else:
            keep_alive = b"keep-alive" in tokens and b"close" not in tokens
        method = raw_method.decode("ascii")
        request = Request(method, target, version, headers, b"", keep_alive)
        if chunked:
            self._parts, self._size, self._pos, self._trailer = [], 0, 0, -1
        return _Head(request, size, chunked, expect and (chunked or size > 0))

    # -- chunked bodies ------------------------------------------------------------------------
    def _chunked_body(self) -> bytes | None:
        buf = self._buf
        while True:
            if self._trailer >= 0:
                return self._trailers()
            eol = buf.find(b"\r\n", self._pos)
            if eol < 0:
                if len(buf) - self._pos > _MAX_CHUNK_LINE:
                    raise HTTPError(400, "malformed chunk size line")
                return None
            line = bytes(buf[self._pos : eol])
            digits = line.split(b";", 1)[0].rstrip(b" \t")
            if eol - self._pos > _MAX_CHUNK_LINE or not _HEX.fullmatch(digits):
                raise HTTPError(400, "malformed chunk size line")
            size = int(digits, 16)
            if size == 0:
                del buf[: eol + 2]
                self._pos = 0
                self._trailer = 0
                continue
            if self._size + size > self.max_body:
                raise HTTPError(413, f"request body larger than {self.max_body} bytes")
            start = eol + 2
            if len(buf) < start + size + 2:
                return None
            if buf[start + size : start + size + 2] != b"\r\n":
                raise HTTPError(400, "chunk data not followed by CRLF")
            self._parts.append(bytes(buf[start : start + size]))
            self._size += size
            del buf[: start + size + 2]
            self._pos = 0

    def _trailers(self) -> bytes | None:
        buf = self._buf
        while True:
            eol = buf.find(b"\r\n")
            if eol < 0:
                if self._trailer + len(buf) > self.max_head:
                    raise HTTPError(431, f"trailer fields larger than {self.max_head} bytes")
                return None
            line = bytes(buf[:eol])
            del buf[: eol + 2]
            if not line:
                body = b"".join(self._parts)
                self._parts, self._size, self._trailer = [], 0, -1
                return body
            self._trailer += eol + 2
            if self._trailer > self.max_head:
                raise HTTPError(431, f"trailer fields larger than {self.max_head} bytes")
            name, sep, value = line.partition(b":")
            if not sep or not _TOKEN.fullmatch(name) or _BAD_VALUE.search(value.strip(b" \t")):
                raise HTTPError(400, "malformed trailer field")
