"""Bounds on what one client can hold: time to send a request, head and body size, connections.

- a deadline to send each request, head and body (``REQUEST_TIMEOUT``), counted from its first
  byte (or from connect, for the first request). Idle keep-alive connections between requests
  have no deadline: the engine keeps them for ever and must not see them closed.
- a connection cap: past ``MAX_CONNECTIONS``, the connections that cost most and do least are
  closed first: clients still sending a request (oldest first), then idle ones. A connection
  whose request is being served is never closed; when every other one is busy, the new one is
  refused with a JSON 503.
- every refusal (bad HTTP, head or body too large, over the cap) is a JSON object
  ``{"Err": "..."}``, the shape the engine reads from a plugin.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Final, Protocol, TypeVar

REQUEST_TIMEOUT: Final = 10.0  # the engine writes a whole request at once; 10 s is generous
MAX_CONNECTIONS: Final = 512  # the engine keeps a few idle ones, plus one per call in flight
MAX_HEAD: Final = 64 * 1024  # request line and headers; the engine's are a few hundred bytes
MAX_BODY: Final = 1 << 20  # when the app names none (PluginApp.max_body is the same)

PENDING: Final = 0  # a request is arriving: its deadline runs
BUSY: Final = 1  # a request is being served: never cut off
IDLE: Final = 2  # between requests: no deadline

PHRASES: Final = {
    200: "OK",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    408: "Request Timeout",
    413: "Content Too Large",
    417: "Expectation Failed",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    501: "Not Implemented",
    503: "Service Unavailable",
    505: "HTTP Version Not Supported",
}


def json_refusal(status: int, message: str) -> bytes:
    """A whole response (closing the connection) with ``{"Err": message}``."""
    body = json.dumps({"Err": message}).encode() + b"\n"
    head = (
        f"HTTP/1.1 {status} {PHRASES.get(status, '')}\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
    )
    return head.encode() + body


class Guarded(Protocol):
    """What the cap needs to know of a connection."""

    state: int
    since: float

    def closing(self) -> bool: ...


C = TypeVar("C", bound=Guarded)


def victims(connections: Iterable[C], newcomer: C, limit: int) -> tuple[list[C], bool]:
    """Which connections to close to get back to ``limit``, and whether to refuse ``newcomer``.

    Slow senders go first (oldest first), then idle ones; busy ones never.
    """
    live = [c for c in connections if not c.closing()]
    excess = len(live) - limit
    if excess <= 0:
        return [], False
    others = [c for c in live if c is not newcomer]
    pending = sorted((c for c in others if c.state == PENDING), key=lambda c: c.since)
    idle = sorted((c for c in others if c.state == IDLE), key=lambda c: c.since)
    chosen = (pending + idle)[:excess]
    return chosen, len(chosen) < excess
