"""Running the ASGI app under uvicorn on sockets we made (unix, inherited, TCP)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
import ssl
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import uvicorn

from . import guard

log = logging.getLogger("dockvol.server")

# The engine keeps idle connections open forever (20.10); a server-side close can turn the
# next request into an empty-body retry. So idle connections stay open for a day.
KEEP_ALIVE_SECONDS = 24 * 3600


def make_server(
    app: Callable[..., Awaitable[None]],
    *,
    ssl_context: ssl.SSLContext | None = None,
    max_connections: int = guard.MAX_CONNECTIONS,
    request_timeout: float = guard.REQUEST_TIMEOUT,
    graceful_seconds: int = 30,
) -> uvicorn.Server:
    # Bounds per client (guard.py): time to send a request, head size, connection count. They
    # replace uvicorn's limit_concurrency, whose plain-text 503 the engine cannot read.
    protocol = guard.protocol_class(
        guard.http_implementation(),
        request_timeout=request_timeout,
        max_connections=max_connections,
    )
    config = uvicorn.Config(
        app,
        http=protocol,
        ws="none",  # the protocol is plain HTTP: no upgrade, whatever happens to be installed
        lifespan="off",  # serve reconciles before binding; embedding users get lifespan
        log_config=None,
        access_log=False,
        server_header=False,
        date_header=False,
        proxy_headers=False,  # no proxy stands before a plugin socket; the middleware costs a call
        timeout_keep_alive=KEEP_ALIVE_SECONDS,
        timeout_graceful_shutdown=graceful_seconds,
        limit_concurrency=None,
        h11_max_incomplete_event_size=guard.MAX_HEAD,
        # Our own context (mutual TLS settings) instead of one uvicorn builds from files.
        ssl_context_factory=(lambda _cfg, _default: ssl_context) if ssl_context else None,
    )
    return uvicorn.Server(config)


def run(
    server: uvicorn.Server,
    sockets: Sequence[socket.socket],
    on_ready: Callable[[], None] | None = None,
    beside: Sequence[contextlib.AbstractAsyncContextManager[Any]] = (),
) -> None:
    """Serve until SIGTERM/SIGINT, then drain in-flight requests.

    ``beside``: other listeners (TCP, metrics) started first and stopped after the main server.
    """

    async def main() -> None:
        async with contextlib.AsyncExitStack() as stack:
            for cm in beside:
                await stack.enter_async_context(cm)
            task = asyncio.create_task(server.serve(sockets=list(sockets)))
            while not server.started and not task.done():
                await asyncio.sleep(0.005)
            if server.started and on_ready is not None:
                on_ready()
            await task

    # uvicorn handles SIGTERM/SIGINT while it serves, then re-raises the signal once it has
    # drained. With the default SIGTERM action that kills us before the socket and spec file
    # are removed, so SIGTERM outside uvicorn's own handling (the re-raise, or one arriving while
    # the side listeners start) just asks the server to stop; the cleanup then runs.
    def stop(signum: int, frame: object) -> None:
        server.should_exit = True

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        # uvloop when installed (the `fast` extra), as uvicorn's own run() would choose.
        with asyncio.Runner(loop_factory=server.config.get_loop_factory()) as runner:
            runner.run(main())
    finally:
        signal.signal(signal.SIGTERM, previous)
