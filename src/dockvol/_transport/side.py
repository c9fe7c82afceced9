"""Servers beside the main one (TCP+TLS, metrics) on the same event loop.

Only ``server.run`` handles SIGTERM/SIGINT; a side server runs while its ``async with`` block
runs and is stopped (gracefully) when the main server has returned.
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .server import HTTPServer


@contextlib.asynccontextmanager
async def serve_beside(server: HTTPServer, sock: socket.socket, what: str) -> AsyncIterator[None]:
    """Serve with ``server`` on ``sock`` until the block ends."""
    try:
        await server.start([sock])
    except OSError as exc:
        raise OSError(f"{what} could not start: {exc}") from None
    try:
        yield
    finally:
        server.stop()
        with contextlib.suppress(Exception):
            await server.shutdown()


def bind_tcp(host: str, port: int, what: str, backlog: int = 1024) -> socket.socket:
    """A listening, non-blocking TCP socket; a clear ``OSError`` if the address is taken."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        infos = socket.getaddrinfo(host, port, family=0, type=socket.SOCK_STREAM)
        family, _, _, _, addr = infos[0]
    except socket.gaierror:
        addr = (host, port)
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(addr)
        sock.listen(backlog)
    except OSError as exc:
        sock.close()
        raise OSError(f"cannot listen for {what} on {host}:{port}: {exc.strerror}") from None
    sock.setblocking(False)
    return sock
