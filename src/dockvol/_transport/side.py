"""Servers beside the main one (TCP+TLS, metrics) on the same event loop.

uvicorn's ``Server.serve`` takes over SIGTERM/SIGINT; with several servers in one loop only the
main one may do that. A side server runs while its ``async with`` block runs and is stopped
(gracefully) when the main server has returned.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Iterator
from typing import Any


def _quiet_server_class() -> type[Any]:
    import uvicorn

    class QuietServer(uvicorn.Server):
        """A uvicorn server that leaves signal handling to the plugin's main server."""

        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            yield

        def install_signal_handlers(self) -> None:  # uvicorn < 0.29
            pass

    return QuietServer


@contextlib.asynccontextmanager
async def serve_beside(config: Any, sock: socket.socket, what: str) -> AsyncIterator[None]:
    """Serve ``config`` (a ``uvicorn.Config``) on ``sock`` until the block ends."""
    server = _quiet_server_class()(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        while not server.started:
            if task.done():
                task.result()  # raises why it failed
                raise OSError(f"{what} stopped at start")
            await asyncio.sleep(0.01)  # uvicorn exposes readiness only as this flag
        yield
    finally:
        server.should_exit = True
        with contextlib.suppress(Exception):
            await task


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
