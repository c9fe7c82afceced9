"""Bounds on what one client can hold: time to send a request, header size, connection count.

uvicorn bounds header size (h11 only) and can refuse work beyond ``limit_concurrency``, but it
answers that with a plain-text 503 (the engine needs a JSON object), counts the engine's idle
keep-alive connections against the limit, and never times out a client that sends a request
slowly: a thousand such clients would lock the engine out. These protocol subclasses add:

- a deadline to send each request, headers and body (``request_timeout``), counted from its
  first byte (or from connect, for the first request). Idle keep-alive connections between
  requests have no deadline: the engine keeps them for ever and must not see them closed.
- a connection cap: past ``max_connections``, the connections that cost most and do least are
  closed first: clients still sending a request (oldest first), then idle ones. A connection
  whose request is being served is never closed.
- JSON bodies for the server's own refusals (bad HTTP, header too large).
"""

from __future__ import annotations

import json
import logging
from typing import Any, Final

from .coalesce import coalescing

log = logging.getLogger("dockvol.guard")

REQUEST_TIMEOUT: Final = 10.0  # the engine writes a whole request at once; 10 s is generous
MAX_CONNECTIONS: Final = 512  # the engine keeps a few idle ones, plus one per call in flight
MAX_HEAD: Final = 64 * 1024  # request line and headers; the engine's are a few hundred bytes

_PENDING, _BUSY, _IDLE = "pending", "busy", "idle"


def json_refusal(status: int, phrase: str, message: str) -> bytes:
    body = json.dumps({"Err": message}).encode() + b"\n"
    head = (
        f"HTTP/1.1 {status} {phrase}\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
    )
    return head.encode() + body


class _Guard:
    """State kept per connection; mixed into uvicorn's protocol classes below."""

    # Set by the class factory.
    request_timeout: float = REQUEST_TIMEOUT
    max_connections: int = MAX_CONNECTIONS
    # Provided by uvicorn's protocol classes.
    loop: Any
    transport: Any
    connections: set[Any]

    _dv_state: str
    _dv_since: float
    _dv_timer: Any
    _dv_logged: float = float("-inf")  # shared: when the cap was last reported
    _dv_closed: int = 0

    def _dv_start(self) -> None:
        self._dv_state, self._dv_since = _PENDING, self.loop.time()
        self._dv_timer = self.loop.call_later(self.request_timeout, self._dv_check)
        self._dv_enforce_cap()

    def _dv_set(self, state: str) -> None:
        if state != self._dv_state:
            self._dv_state, self._dv_since = state, self.loop.time()

    def _dv_check(self) -> None:
        if self.transport.is_closing():
            return
        waited = self.loop.time() - self._dv_since
        if self._dv_state == _PENDING and waited >= self.request_timeout:
            log.warning(
                "closing a connection that took over %.0f s to send its request",
                self.request_timeout,
            )
            self.transport.close()
            return
        delay = (
            self.request_timeout - waited if self._dv_state == _PENDING else self.request_timeout
        )
        self._dv_timer = self.loop.call_later(max(delay, 0.05), self._dv_check)

    def _dv_stop(self) -> None:
        timer = getattr(self, "_dv_timer", None)
        if timer is not None:
            timer.cancel()

    def _dv_enforce_cap(self) -> None:
        if len(self.connections) <= self.max_connections:
            return  # the common case: no scan
        live = [c for c in self.connections if not c.transport.is_closing()]
        excess = len(live) - self.max_connections
        if excess <= 0:
            return
        others = [c for c in live if c is not self and isinstance(c, _Guard)]
        pending = sorted((c for c in others if c._dv_state == _PENDING), key=lambda c: c._dv_since)
        idle = sorted((c for c in others if c._dv_state == _IDLE), key=lambda c: c._dv_since)
        victims = (pending + idle)[:excess]
        for c in victims:
            c.transport.close()
        refused = len(victims) < excess  # every other connection is being served
        if refused:
            self.transport.close()
        _Guard._dv_closed += len(victims) + refused
        now = self.loop.time()
        if now - _Guard._dv_logged >= 10.0:  # one line per 10 s under attack, not one per client
            log.warning(
                "over %d connections: closed %d slow, idle or refused connection(s) since the "
                "last report",
                self.max_connections,
                _Guard._dv_closed,
            )
            _Guard._dv_logged, _Guard._dv_closed = now, 0


def http_implementation() -> str:
    """``httptools`` when installed (the ``fast`` extra), else ``h11``: as uvicorn's ``auto``."""
    import importlib.util

    return "httptools" if importlib.util.find_spec("httptools") is not None else "h11"


def protocol_class(
    kind: str = "h11",
    *,
    request_timeout: float = REQUEST_TIMEOUT,
    max_connections: int = MAX_CONNECTIONS,
    max_head: int = MAX_HEAD,
) -> type[Any]:
    """A uvicorn HTTP protocol class (``kind``: ``h11`` or ``httptools``) with the guard.

    Pass it as ``uvicorn.Config(http=...)`` with ``limit_concurrency=None`` and, for h11,
    ``h11_max_incomplete_event_size=max_head``.
    """
    if kind == "httptools":
        return _httptools_class(request_timeout, max_connections, max_head)
    if kind != "h11":
        raise ValueError(f"unknown HTTP implementation {kind!r}: h11 or httptools")
    return _h11_class(request_timeout, max_connections)


def _h11_class(request_timeout: float, max_connections: int) -> type[Any]:
    import h11
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class GuardedH11Protocol(_Guard, H11Protocol):
        def connection_made(self, transport: Any) -> None:
            super().connection_made(coalescing(transport, self.loop))
            self._dv_start()

        def connection_lost(self, exc: Exception | None) -> None:
            self._dv_stop()
            super().connection_lost(exc)

        def data_received(self, data: bytes) -> None:
            if self._dv_state == _IDLE:
                self._dv_set(_PENDING)  # the first byte of the next request
            super().data_received(data)
            self._dv_update()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            self._dv_update()

        def _dv_update(self) -> None:
            theirs = self.conn.their_state
            nothing_owed = self.cycle is None or self.cycle.response_complete
            if theirs is h11.IDLE and not self.conn.trailing_data[0] and nothing_owed:
                if self.cycle is not None:  # a request was served: idle keep-alive
                    self._dv_set(_IDLE)
                return
            if theirs is h11.IDLE or theirs is h11.SEND_BODY:
                return  # part of a request is in: the deadline runs
            self._dv_set(_BUSY)  # the whole request is in: the app has it

        def send_400_response(self, msg: str) -> None:
            self.transport.write(json_refusal(400, "Bad Request", f"{msg} Send HTTP/1.1."))
            self.transport.close()

    GuardedH11Protocol.request_timeout = request_timeout
    GuardedH11Protocol.max_connections = max_connections
    return GuardedH11Protocol


def _httptools_class(request_timeout: float, max_connections: int, max_head: int) -> type[Any]:
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    class GuardedHttpToolsProtocol(_Guard, HttpToolsProtocol):
        _dv_head = 0  # bytes of the current request's head so far; -1: its headers are complete
        _dv_head_too_large = False

        def connection_made(self, transport: Any) -> None:
            super().connection_made(coalescing(transport, self.loop))
            self._dv_start()

        def connection_lost(self, exc: Exception | None) -> None:
            self._dv_stop()
            super().connection_lost(exc)

        def data_received(self, data: bytes) -> None:
            if self._dv_state == _IDLE:
                self._dv_set(_PENDING)
            super().data_received(data)
            if self._dv_head >= 0 and not self.transport.is_closing():
                self._dv_head += len(data)  # headers still unfinished: a slow, huge head
                if self._dv_head > max_head:
                    self._dv_refuse_head()

        def on_message_begin(self) -> None:
            super().on_message_begin()
            self._dv_head = 0

        def on_headers_complete(self) -> None:
            self._dv_head = -1
            size = len(self.url) + sum(len(k) + len(v) + 4 for k, v in self.headers)
            if size > max_head:
                # Raising from a parser callback makes httptools stop this request; uvicorn then
                # calls send_400_response, which answers 431 for this case.
                self._dv_head_too_large = True
                raise ValueError("request headers too large")
            super().on_headers_complete()

        def on_message_complete(self) -> None:
            super().on_message_complete()
            self._dv_set(_BUSY)

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if not self.pipeline and self._dv_state == _BUSY:
                self._dv_set(_IDLE)

        def send_400_response(self, msg: str) -> None:
            if self._dv_head_too_large:
                self._dv_refuse_head()
                return
            self.transport.write(json_refusal(400, "Bad Request", f"{msg} Send HTTP/1.1."))
            self.transport.close()

        def _dv_refuse_head(self) -> None:
            self.transport.write(
                json_refusal(
                    431,
                    "Request Header Fields Too Large",
                    f"request headers larger than {max_head} bytes",
                )
            )
            self.transport.close()

    GuardedHttpToolsProtocol.request_timeout = request_timeout
    GuardedHttpToolsProtocol.max_connections = max_connections
    return GuardedHttpToolsProtocol
