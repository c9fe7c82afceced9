"""One client connection of dockvol's HTTP server: its requests, parsed and served in order.

``Connection`` is the asyncio protocol: it feeds the parser, enforces the bounds of ``guard.py``
on this connection (request deadline, idle time), and runs one ``Cycle`` at a time. ``Cycle`` is
one request and its reply: the ASGI ``receive`` and ``send`` the app sees.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import MutableMapping
from typing import TYPE_CHECKING, Any

from . import guard
from .http1 import HTTPError, Parser, Request

if TYPE_CHECKING:
    from .server import HTTPServer

log = logging.getLogger("dockvol.server")

Message = MutableMapping[str, Any]

ASGI_VERSION = {"version": "3.0", "spec_version": "2.3"}
_PIPELINE_BYTES = 256 * 1024  # unserved bytes buffered before a connection stops reading
_WRITE_HIGH = 256 * 1024  # unsent reply bytes before the next request waits for the client
_JOIN_MAX = 16 * 1024  # bodies up to this size leave in the same write as their head
_LINGER_SECONDS = 2.0  # after a refusal, read (and drop) what the client still sends


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
            "asgi": ASGI_VERSION,
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
