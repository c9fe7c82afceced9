"""A minimal HTTP/1.1 client over a unix socket, shaped like the Docker engine's plugin client.

The benchmark measures the server, so the client must cost little: requests are pre-built
bytes (empty Host, no Content-Type, a body ending in a newline, as Go's encoder writes it),
the connection is kept alive, and a response is parsed only as far as needed to find its end
(Content-Length or chunked). Many connections are driven by one thread with epoll, so client
threads never compete for the GIL while the server answers.
"""

from __future__ import annotations

import json
import select
import socket
import time
from collections.abc import Callable, Sequence
from typing import Any

_HEAD = (
    "POST /{endpoint} HTTP/1.1\r\n"
    "Host: \r\n"
    "User-Agent: Go-http-client/1.1\r\n"
    "Content-Length: {length}\r\n"
    "Accept: application/vnd.docker.plugins.v1.2+json\r\n"
    "Accept-Encoding: gzip\r\n"
    "\r\n"
)


def request(endpoint: str, body: Any = None) -> bytes:
    """The bytes the engine sends for ``endpoint`` (``VolumeDriver.Get``) with ``body``."""
    raw = b"" if body is None else json.dumps(body, separators=(",", ":")).encode() + b"\n"
    return _HEAD.format(endpoint=endpoint, length=len(raw)).encode() + raw


def response_end(buf: bytes | bytearray) -> int:
    """Length of the first complete response in ``buf``, or 0 if it is not complete yet."""
    head_end = buf.find(b"\r\n\r\n")
    if head_end < 0:
        return 0
    body_start = head_end + 4
    head = bytes(buf[:head_end]).lower()
    i = head.find(b"content-length:")
    if i >= 0:
        j = head.find(b"\r\n", i)
        n = int(head[i + 15 : j if j >= 0 else len(head)])
        return body_start + n if len(buf) >= body_start + n else 0
    if b"transfer-encoding: chunked" not in head:
        raise ValueError(f"response without length: {bytes(buf[:200])!r}")
    pos = body_start
    while True:  # walk the chunks: size line, data, CRLF; the last has size 0
        eol = buf.find(b"\r\n", pos)
        if eol < 0:
            return 0
        size = int(bytes(buf[pos:eol]).split(b";")[0], 16)
        if size == 0:
            end = buf.find(b"\r\n", eol + 2)  # no trailers expected: just the final CRLF
            return end + 2 if end >= 0 else 0
        pos = eol + 2 + size + 2
        if pos > len(buf):
            return 0


def body_of(response: bytes) -> bytes:
    """The decoded body of one complete response (for checking answers, not in timed loops)."""
    head_end = response.find(b"\r\n\r\n")
    head, rest = response[:head_end].lower(), response[head_end + 4 :]
    if b"transfer-encoding: chunked" not in head:
        return rest
    out, pos = bytearray(), 0
    while True:
        eol = rest.find(b"\r\n", pos)
        size = int(rest[pos:eol].split(b";")[0], 16)
        if size == 0:
            return bytes(out)
        out += rest[eol + 2 : eol + 2 + size]
        pos = eol + 2 + size + 2


class Connection:
    """One keep-alive connection; ``roundtrip`` sends pre-built bytes and returns the response."""

    def __init__(self, path: str, timeout: float = 60.0) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.sock.connect(path)
        self._buf = bytearray()

    def roundtrip(self, req: bytes) -> bytes:
        self.sock.sendall(req)
        buf = self._buf
        while True:
            if buf:
                n = response_end(buf)
                if n:
                    out = bytes(buf[:n])
                    del buf[:n]
                    return out
            chunk = self.sock.recv(262144)
            if not chunk:
                raise ConnectionError("server closed the connection")
            buf += chunk

    def call(self, endpoint: str, body: Any = None) -> Any:
        """One request with a JSON answer (setup and checks, not timed loops)."""
        data = body_of(self.roundtrip(request(endpoint, body)))
        return json.loads(data) if data else None

    def close(self) -> None:
        self.sock.close()


def timed(conn: Connection, requests: Sequence[bytes]) -> list[float]:
    """Send ``requests`` one after another; seconds per round trip."""
    out = []
    clock = time.perf_counter
    rt = conn.roundtrip
    for req in requests:
        t0 = clock()
        rt(req)
        out.append(clock() - t0)
    return out


def timed_concurrent(
    path: str, streams: Sequence[Sequence[bytes]], check: Callable[[bytes], None] | None = None
) -> list[float]:
    """Drive one connection per stream at once (stream i: its requests, in order), with epoll.

    Each connection always has exactly one request in flight, as an engine thread would.
    Returns every round trip's seconds. ``check`` sees each complete response.
    """
    conns = [Connection(path) for _ in streams]
    ep = select.epoll()
    state: dict[int, list[Any]] = {}  # fd -> [conn, stream, next index, start time, buffer]
    lat: list[float] = []
    clock = time.perf_counter
    try:
        for conn, stream in zip(conns, streams, strict=True):
            if not stream:
                continue
            conn.sock.setblocking(False)
            fd = conn.sock.fileno()
            state[fd] = [conn, stream, 1, clock(), bytearray()]
            conn.sock.sendall(stream[0])  # small requests: the socket buffer takes them whole
            ep.register(fd, select.EPOLLIN)
        while state:
            for fd, _ in ep.poll(60.0):
                st = state[fd]
                chunk = st[0].sock.recv(262144)
                if not chunk:
                    raise ConnectionError("server closed the connection")
                buf = st[4]
                buf += chunk
                n = response_end(buf)
                if not n:
                    continue
                now = clock()
                lat.append(now - st[3])
                if check is not None:
                    check(bytes(buf[:n]))
                del buf[:n]
                if st[2] >= len(st[1]):
                    ep.unregister(fd)
                    del state[fd]
                    continue
                st[3] = clock()
                st[0].sock.sendall(st[1][st[2]])
                st[2] += 1
    finally:
        ep.close()
        for c in conns:
            c.close()
    return lat
