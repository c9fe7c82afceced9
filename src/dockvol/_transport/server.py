"""dockvol's own HTTP/1.1 server: an ASGI app on sockets we made (unix, inherited, TCP+TLS).

One asyncio protocol per connection (``connection.py``), the request parser of ``http1.py``,
and the bounds of ``guard.py``. Requests on one connection are served one at a time, in order
(pipelined ones wait their turn); a reply's head and body leave in one write. On ``stop()`` the listeners close, idle
connections close, and requests in flight finish (up to ``graceful_seconds``).

Why not a general ASGI server: the engine is the only client of a plugin socket, and a server
shaped for it starts faster, holds less memory and answers sooner (BENCHMARKS.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any

from . import guard
from .connection import ASGI_VERSION, Connection, Message

if TYPE_CHECKING:
    import ssl

log = logging.getLogger("dockvol.server")

# The engine keeps idle connections open forever (20.10); a server-side close can turn the
# next request into an empty-body retry. So idle connections stay open for a day.
KEEP_ALIVE_SECONDS = 24 * 3600

ASGIApp = Callable[..., Awaitable[None]]


class HTTPServer:
    """Serves ``app`` on listening sockets until :meth:`stop`."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        ssl_context: ssl.SSLContext | None = None,
        max_connections: int = guard.MAX_CONNECTIONS,
        request_timeout: float = guard.REQUEST_TIMEOUT,
        max_head: int = guard.MAX_HEAD,
        max_body: int | None = None,
        graceful_seconds: float = 30,
        keep_alive_seconds: float = KEEP_ALIVE_SECONDS,
        lifespan: bool = False,
    ) -> None:
        self.app = app
        self.ssl_context = ssl_context
        self.max_connections = max_connections
        self.request_timeout = request_timeout
        self.max_head = max_head
        # The app's own bound when it has one: a body it would refuse is not buffered.
        self.max_body: int = max_body or getattr(app, "max_body", None) or guard.MAX_BODY
        self.graceful_seconds = graceful_seconds
        self.keep_alive_seconds = keep_alive_seconds
        self.check_period = min(request_timeout, keep_alive_seconds)  # of each connection's bounds
        self.lifespan = lifespan
        self.connections: set[Connection] = set()
        self.started = False
        self.draining = False
        self._servers: list[asyncio.AbstractServer] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._stop_requested = False
        self._force = False
        self._all_closed: asyncio.Event | None = None
        self._lifespan_queue: asyncio.Queue[Message] | None = None
        self._lifespan_task: asyncio.Task[None] | None = None
        self._lifespan_done: asyncio.Queue[Message] | None = None
        self._cap_logged = float("-inf")
        self._cap_closed = 0

    # -- life cycle ----------------------------------------------------------------------------
    async def serve(self, sockets: Sequence[socket.socket]) -> None:
        """Start on ``sockets``, serve until :meth:`stop`, then drain."""
        await self.start(sockets)
        assert self._stop is not None
        await self._stop.wait()
        await self.shutdown()

    async def start(self, sockets: Sequence[socket.socket]) -> None:
        loop = self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        self._all_closed = asyncio.Event()
        if self._stop_requested:
            self._stop.set()
        if self.lifespan:
            await self._lifespan_startup()
        for sock in sockets:
            if sock.family == socket.AF_UNIX:
                server = await loop.create_unix_server(
                    self._connection, sock=sock, ssl=self.ssl_context, backlog=1024
                )
            else:
                server = await loop.create_server(
                    self._connection,
                    sock=sock,
                    ssl=self.ssl_context,
                    backlog=1024,
                    # A client that never finishes its handshake is a slow request.
                    ssl_handshake_timeout=self.request_timeout if self.ssl_context else None,
                )
            self._servers.append(server)
        self.started = True

    def stop(self, force: bool = False) -> None:
        """Begin the drain (from the loop's thread); a second call, or ``force``, cuts it short."""
        if self._stop_requested or force:
            self._force = True
            for conn in list(self.connections):
                conn.abort()
        self._stop_requested = True
        if self._stop is not None:
            self._stop.set()

    def stop_threadsafe(self, force: bool = False) -> None:
        """:meth:`stop` from another thread."""
        loop = self._loop
        if loop is None or loop.is_closed():
            self._stop_requested = True
            return
        with contextlib.suppress(RuntimeError):  # the loop has just stopped
            loop.call_soon_threadsafe(self.stop, force)

    async def shutdown(self) -> None:
        self.draining = True
        for server in self._servers:
            server.close()
        for conn in list(self.connections):
            conn.drain()
        assert self._all_closed is not None
        if self.connections and not self._force:
            try:
                await asyncio.wait_for(self._all_closed.wait(), self.graceful_seconds)
            except TimeoutError:
                log.warning(
                    "%d request(s) still running after %s s: closing their connections",
                    sum(c.state == guard.BUSY for c in self.connections),
                    self.graceful_seconds,
                )
        for conn in list(self.connections):
            conn.abort()
        if self.lifespan:
            await self._lifespan_shutdown()

    def _connection(self) -> Connection:
        return Connection(self)

    def _gone(self, conn: Connection) -> None:
        self.connections.discard(conn)
        if self.draining and not self.connections and self._all_closed is not None:
            self._all_closed.set()

    def enforce_cap(self, newcomer: Connection) -> None:
        if len(self.connections) <= self.max_connections:
            return  # the common case: no scan
        chosen, refuse = guard.victims(self.connections, newcomer, self.max_connections)
        for conn in chosen:
            conn.transport.close()
        if refuse:
            newcomer.refuse(
                503,
                f"the plugin has {self.max_connections} connections, all serving requests: "
                "retry later",
            )
        self._cap_closed += len(chosen) + refuse
        assert self._loop is not None
        now = self._loop.time()
        if now - self._cap_logged >= 10.0:  # one line per 10 s under attack, not one per client
            log.warning(
                "over %d connections: closed %d slow, idle or refused connection(s) since the "
                "last report",
                self.max_connections,
                self._cap_closed,
            )
            self._cap_logged, self._cap_closed = now, 0

    # -- ASGI lifespan (for embedding: testing/inprocess.py) -----------------------------------
    async def _lifespan_startup(self) -> None:
        queue: asyncio.Queue[Message] = asyncio.Queue()
        done: asyncio.Queue[Message] = asyncio.Queue()

        async def send(message: Message) -> None:
            await done.put(message)

        scope = {"type": "lifespan", "asgi": ASGI_VERSION, "state": {}}
        self._lifespan_queue = queue
        self._lifespan_task = asyncio.ensure_future(self.app(scope, queue.get, send))
        await queue.put({"type": "lifespan.startup"})
        getter = asyncio.ensure_future(done.get())
        await asyncio.wait([getter, self._lifespan_task], return_when=asyncio.FIRST_COMPLETED)
        if not getter.done():
            getter.cancel()
            self._lifespan_task.result()  # raises why startup failed
            raise RuntimeError("the app ended its lifespan before startup completed")
        reply = getter.result()
        if reply["type"] != "lifespan.startup.complete":
            raise RuntimeError(f"app startup failed: {reply.get('message', reply['type'])}")
        self._lifespan_done = done

    async def _lifespan_shutdown(self) -> None:
        if self._lifespan_queue is None or self._lifespan_task is None:
            return
        await self._lifespan_queue.put({"type": "lifespan.shutdown"})
        if self._lifespan_done is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._lifespan_done.get(), self.graceful_seconds)
        if not self._lifespan_task.done():
            self._lifespan_task.cancel()


# -- dockvol serve -------------------------------------------------------------------------------


def make_server(
    app: ASGIApp,
    *,
    ssl_context: ssl.SSLContext | None = None,
    max_connections: int = guard.MAX_CONNECTIONS,
    request_timeout: float = guard.REQUEST_TIMEOUT,
    graceful_seconds: int = 30,
) -> HTTPServer:
    return HTTPServer(
        app,
        ssl_context=ssl_context,
        max_connections=max_connections,
        request_timeout=request_timeout,
        graceful_seconds=graceful_seconds,
    )


def loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's loop when installed (the ``fast`` extra), else asyncio's."""
    try:
        import uvloop
    except ImportError:
        return None
    new_loop: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return new_loop


def run(
    server: HTTPServer,
    sockets: Sequence[socket.socket],
    on_ready: Callable[[], None] | None = None,
    beside: Sequence[contextlib.AbstractAsyncContextManager[Any]] = (),
) -> None:
    """Serve until SIGTERM/SIGINT, then drain in-flight requests.

    ``beside``: other listeners (TCP, metrics) started first and stopped after the main server.
    """

    async def main() -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, server.stop)
        try:
            async with contextlib.AsyncExitStack() as stack:
                for cm in beside:
                    await stack.enter_async_context(cm)
                await server.start(sockets)
                if on_ready is not None:
                    on_ready()
                assert server._stop is not None
                await server._stop.wait()
                await server.shutdown()
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)

    # A SIGTERM before the loop runs (or after it) asks for a stop instead of killing us
    # before the socket and spec file are removed.
    def stop(signum: int, frame: object) -> None:
        server._stop_requested = True

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        with asyncio.Runner(loop_factory=loop_factory()) as runner:
            runner.run(main())
    finally:
        signal.signal(signal.SIGTERM, previous)
