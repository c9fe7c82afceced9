"""One send per response: a connection's writes in one loop step go out together, just after.

uvicorn writes a response's head and its body with two ``transport.write`` calls, and each
becomes a send that wakes the engine: at 16 concurrent Gets, joining them took p50 from 2.8 to
1.8 ms (bench, measured side by side).
"""

from __future__ import annotations

import asyncio
from typing import Any, cast


class CoalescingTransport:
    """Wraps a transport; everything but writing and closing goes straight through."""

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._pending: list[bytes] = []

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if not self._pending:
            self._loop.call_soon(self.flush)
        self._pending.append(bytes(data))

    def writelines(self, chunks: Any) -> None:
        for chunk in chunks:
            self.write(chunk)

    def flush(self) -> None:
        if not self._pending:
            return
        data = b"".join(self._pending)
        self._pending.clear()
        if not self._transport.is_closing():
            self._transport.write(data)

    def close(self) -> None:
        self.flush()  # a reply or refusal written just before closing must still go out
        self._transport.close()

    def get_write_buffer_size(self) -> int:
        return self._transport.get_write_buffer_size() + sum(map(len, self._pending))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


def coalescing(transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> asyncio.Transport:
    """``transport`` with its writes joined per loop step (a duck-typed stand-in for it)."""
    return cast(asyncio.Transport, CoalescingTransport(transport, loop))
