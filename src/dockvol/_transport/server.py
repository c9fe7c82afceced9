"""dockvol's own HTTP/1.1 server: an ASGI app on sockets we made (unix, inherited, TCP+TLS).

One asyncio protocol per connection, the request parser of ``http1.py``, and the bounds of
``guard.py``. Requests on one connection are served one at a time, in order (pipelined ones
wait their turn); each response leaves in one write. On ``stop()`` the listeners close, idle
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
from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from typing import TYPE_CHECKING, Any

from . import guard
from .http1 import HTTPError, Parser, Request

if TYPE_CHECKING:
    import ssl

log = logging.getLogger("dockvol.server")

# The engine keeps idle connections open forever (20.10); a server-side close can turn the
# next request into an empty-body retry. So idle connections stay open for a day.
KEEP_ALIVE_SECONDS = 24 * 3600

ASGIApp = Callable[..., Awaitable[None]]
Message = MutableMapping[str, Any]

_ASGI = {"version": "3.0", "spec_version": "2.3"}
_PIPELINE_BYTES = 256 * 1024  # unserved bytes buffered before a connection stops reading
_WRITE_HIGH = 256 * 1024  # unsent reply bytes before the next request waits for the client
_JOIN_MAX = 16 * 1024  # bodies up to this size leave in the same write as their head
_LINGER_SECONDS = 2.0  # after a refusal, read (and drop) what the client still sends


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

        scope = {"type": "lifespan", "asgi": _ASGI, "state": {}}
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


class Connection(asyncio.Protocol):
    """One client: parses its requests and runs the app for each, in order."""

    def __init__(self, server: HTTPServer) -> None:
        self.server = server
        self.app = server.app
        self.parser = Parser(server.max_head, server.max_body)
        self.state = guard.PENDING
        self.since = 0.0
        self.served = 0
        self.transport: asyncio.Transport = None  # type: ignore[assignment]
        self.loop: asyncio.AbstractEventLoop = None  # type: ignore[assignment]
        self.cycle: Cycle | None = None
        self.scheme = "http"
        self.client: tuple[str, int] | None = None
        self.local: tuple[str, int] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._lingering = False
        self._eof = False  # the client has sent all it will
        self._reading = True
        self._writable: asyncio.Future[None] | None = None
        self._lost: asyncio.Future[None] | None = None

    # -- asyncio's callbacks -------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.loop = self.server._loop or asyncio.get_running_loop()
        self.since = self.loop.time()
        transport.set_write_buffer_limits(high=_WRITE_HIGH)  # type: ignore[attr-defined]
        if transport.get_extra_info("sslcontext") is not None:
            self.scheme = "https"
        peer = transport.get_extra_info("peername")
        if isinstance(peer, tuple):
            self.client = (str(peer[0]), int(peer[1]))
            here = transport.get_extra_info("sockname")
            if isinstance(here, tuple):
                self.local = (str(here[0]), int(here[1]))
        self.server.connections.add(self)
        if self.server.draining:
            transport.close()
            return
        self._timer = self.loop.call_later(self.server.check_period, self._check)
        self.server.enforce_cap(self)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._lost is not None and not self._lost.done():
            self._lost.set_result(None)
        if self._writable is not None and not self._writable.done():
            self._writable.set_result(None)
        self.server._gone(self)

    def data_received(self, data: bytes) -> None:
        if self._lingering:
            return  # refused: drop what still arrives until the client reads our answer
        if self.state == guard.IDLE:
            self.state, self.since = guard.PENDING, self.loop.time()  # the next request's 1st byte
        self.parser.feed(data)
        if self.cycle is None:
            self._next()
        elif self.parser.buffered > _PIPELINE_BYTES and self._reading:
            self._reading = False
            self.transport.pause_reading()  # pipelined far ahead: wait for the replies

    def eof_received(self) -> bool | None:
        self._eof = True
        if self.cycle is None:
            self.transport.close()
            return None
        # A request being served still gets its reply (half-close); TLS cannot half-close.
        return None if self.scheme == "https" else True

    def pause_writing(self) -> None:
        self._writable = self.loop.create_future()

    def resume_writing(self) -> None:
        if self._writable is not None and not self._writable.done():
            self._writable.set_result(None)
        self._writable = None

    # -- the guard -----------------------------------------------------------------------------
    def closing(self) -> bool:
        return self._lingering or self.transport.is_closing()

    def _limit(self) -> float | None:
        """How long the current state may last: sending a request, or idling between two."""
        if self.state == guard.PENDING:
            return self.server.request_timeout
        if self.state == guard.IDLE:
            return self.server.keep_alive_seconds
        return None  # being served: never cut off

    def _check(self) -> None:
        """Runs at least every ``request_timeout`` for the connection's life: no timer is set
        or cancelled per request, and a deadline is enforced within that period."""
        if self.transport.is_closing():
            self._timer = None
            return
        limit = self._limit()
        period = self.server.check_period
        delay = period
        if limit is not None:
            waited = self.loop.time() - self.since
            if waited >= limit:
                if self.state == guard.PENDING:
                    log.warning(
                        "closing a connection that took over %.0f s to send its request", limit
                    )
                self._timer = None
                self.transport.close()
                return
            delay = min(limit - waited, period)
        self._timer = self.loop.call_later(max(delay, 0.01), self._check)

    def refuse(self, status: int, message: str) -> None:
        """Answer ``{"Err": message}`` and close, letting the client read the answer first."""
        self.state = guard.BUSY  # nothing more to parse: not a slow sender any more
        transport = self.transport
        if transport.is_closing():
            return
        transport.write(guard.json_refusal(status, message))
        if self._lingering or not transport.can_write_eof():
            transport.close()
            return
        # Closing with unread input would reset the connection and could destroy the answer
        # before the client reads it: send EOF, drop what still comes, close soon after.
        self._lingering = True
        transport.write_eof()
        if not self._reading:
            self._reading = True
            transport.resume_reading()
        self.loop.call_later(_LINGER_SECONDS, transport.close)

    def drain(self) -> None:
        """The server is stopping: close now unless a request is being served."""
        if self.cycle is None:
            self.transport.close()

    def abort(self) -> None:
        if self.cycle is not None and self.cycle.task is not None:
            self.cycle.task.cancel()
        self.transport.close()

    # -- requests ------------------------------------------------------------------------------
    def _next(self) -> None:
        try:
            request = self.parser.next()
        except HTTPError as exc:
            self.refuse(exc.status, exc.message)
            return
        if request is None:
            if self.parser.wants_continue:
                self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")
                self.parser.continue_sent()
            return
        self.state = guard.BUSY
        cycle = self.cycle = Cycle(self, request)
        cycle.task = self.loop.create_task(cycle.run())

    def done(self, cycle: Cycle) -> None:
        """``cycle``'s reply is written: close, or go on with the next request."""
        self.cycle = None
        self.served += 1
        if not cycle.keep_alive or self.server.draining or self.transport.is_closing():
            self.transport.close()
            return
        if self.parser.buffered:
            self.state, self.since = guard.PENDING, self.loop.time()
        else:
            self.state, self.since = guard.IDLE, self.loop.time()  # a day at most
        if not self._reading:
            self._reading = True
            self.transport.resume_reading()
        if self._writable is not None:
            # The client is not reading its replies: serve nothing more until it does.
            self._writable.add_done_callback(lambda _f: self._next_if_free())
            return
        self._next_if_free()

    def _next_if_free(self) -> None:
        if self.cycle is None and not self.transport.is_closing():
            self._next()
            if self._eof and self.cycle is None:
                self.transport.close()  # all the client's requests are answered

    def lost(self) -> asyncio.Future[None]:
        if self._lost is None:
            self._lost = self.loop.create_future()
            if self.transport.is_closing():
                self._lost.set_result(None)
        return self._lost


class Cycle:
    """One request and its response: the ASGI ``receive`` and ``send`` of one call."""

    __slots__ = (
        "_chunked",
        "complete",
        "conn",
        "head",
        "keep_alive",
        "received",
        "request",
        "scope",
        "started",
        "task",
    )

    def __init__(self, conn: Connection, request: Request) -> None:
        self.conn = conn
        self.request = request
        self.keep_alive = request.keep_alive
        self.received = False
        self.started = False
        self.complete = False
        self.head = b""
        self.task: asyncio.Task[None] | None = None
        self._chunked = False
        target = request.target
        if target[:1] != b"/" and b"://" in target:  # absolute form: keep the path
            target = b"/" + target.split(b"://", 1)[1].partition(b"/")[2]
        raw_path, _, query = target.partition(b"?")
        path = raw_path.decode("latin-1")
        if "%" in path:
            from urllib.parse import unquote

            path = unquote(path)
        self.scope: dict[str, Any] = {
            "type": "http",
            "asgi": _ASGI,
            "http_version": request.version,
            "method": request.method,
            "scheme": conn.scheme,
            "path": path,
            "raw_path": raw_path,
            "query_string": query,
            "root_path": "",
            "headers": request.headers,
            "client": conn.client,
            "server": conn.local,
        }

    async def run(self) -> None:
        conn = self.conn
        try:
            await conn.app(self.scope, self.receive, self.send)
        except asyncio.CancelledError:
            conn.transport.close()  # the server is stopping without waiting any more
            return
        except Exception:  # the app's bug: a JSON 500 on the wire, the traceback in the log
            log.exception("internal error in the HTTP app on %s", self.scope["path"])
            self._fail()
            return
        if not self.complete:
            log.error("the HTTP app returned without completing its reply")
            self._fail()
            return
        conn.done(self)

    def _fail(self) -> None:
        conn = self.conn
        if self.started or conn.transport.is_closing():
            conn.transport.close()  # part of a reply is out: the stream is broken
        else:
            conn.refuse(500, "internal error in the plugin; see the plugin log")
        conn.cycle = None

    async def receive(self) -> Message:
        if not self.received:
            self.received = True
            return {"type": "http.request", "body": self.request.body, "more_body": False}
        if not self.complete:
            await self.conn.lost()
        return {"type": "http.disconnect"}

    async def send(self, message: Message) -> None:
        kind = message["type"]
        if kind == "http.response.start":
            if self.started:
                raise RuntimeError("http.response.start sent twice")
            self.started = True
            self.head = self._head(message["status"], message.get("headers") or ())
        elif kind == "http.response.body":
            if not self.started or self.complete:
                raise RuntimeError("http.response.body outside a response")
            body = message.get("body", b"")
            more = message.get("more_body", False)
            self.complete = not more
            transport = self.conn.transport
            if transport.is_closing():
                return  # the client went away; finish quietly
            if self.request.method == "HEAD":
                body = b""
            elif self._chunked:
                body = (b"%x\r\n%s\r\n" % (len(body), body) if body else b"") + (
                    b"" if more else b"0\r\n\r\n"
                )
            if self.head:
                if len(body) < _JOIN_MAX:
                    transport.write(self.head + body)  # one send: the client wakes once
                else:
                    transport.write(self.head)  # a big body (List) is not copied to be joined
                    transport.write(body)
                self.head = b""
            elif body:
                transport.write(body)
            writable = self.conn._writable
            if more and writable is not None:
                await writable  # the client reads slowly: wait before sending more
        else:
            raise RuntimeError(f"unexpected ASGI message {kind!r}")

    def _head(self, status: int, headers: Any) -> bytes:
        length = False
        lines = [b"HTTP/1.1 %d %s\r\n" % (status, _phrase(status).encode())]
        for name, value in headers:
            lowered = name.lower()
            if lowered == b"content-length":
                length = True
            elif lowered == b"connection":
                if b"close" in value.lower():
                    self.keep_alive = False
                continue  # ours says it
            elif lowered == b"transfer-encoding":
                continue  # ours says it
            lines.append(b"%s: %s\r\n" % (name, value))
        if not length and self.request.method != "HEAD":
            if self.request.version == "1.1":
                self._chunked = True
                lines.append(b"transfer-encoding: chunked\r\n")
            else:
                self.keep_alive = False  # HTTP/1.0 without a length: the end is the close
        if self.conn.server.draining:
            self.keep_alive = False  # stopping: tell the client not to send another
        if not self.keep_alive:
            lines.append(b"connection: close\r\n")
        elif self.request.version == "1.0":
            lines.append(b"connection: keep-alive\r\n")
        lines.append(b"\r\n")
        return b"".join(lines)


def _phrase(status: int) -> str:
    phrase = guard.PHRASES.get(status)
    if phrase is None:
        from http import HTTPStatus

        try:
            phrase = HTTPStatus(status).phrase
        except ValueError:
            phrase = ""
    return phrase


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
