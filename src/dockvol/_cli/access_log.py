"""The per-request log line of ``dockvol serve``, written without the logging machinery.

One line per request is the busiest log there is; formatting it through ``logging`` costs more
than answering a Get. This writer formats the same fields directly, as text or JSON.
"""

from __future__ import annotations

import asyncio
import sys
import time
from typing import TextIO

import msgspec

_json = msgspec.json.Encoder()


class AccessLog:
    """An app observer: ``(endpoint, volume, mount_id, seconds, outcome, error)`` -> one line."""

    def __init__(self, fmt: str = "text", stream: TextIO | None = None) -> None:
        self.json = fmt == "json"
        self.stream = stream or sys.stderr
        self._second = -1
        self._pending: list[str] = []
        self._stamp = ""

    def _now(self) -> str:
        t = time.time()
        sec = int(t)
        if sec != self._second:  # strftime once per second, not once per request
            self._second = sec
            fmt = "%Y-%m-%dT%H:%M:%S" if self.json else "%Y-%m-%d %H:%M:%S"
            self._stamp = time.strftime(fmt, time.gmtime(sec))
        ms = int((t - sec) * 1000)
        return f"{self._stamp}.{ms:03d}Z" if self.json else f"{self._stamp},{ms:03d}"

    def __call__(
        self, endpoint: str, volume: str, mount_id: str, seconds: float, outcome: str, err: str
    ) -> None:
        ep = endpoint.lstrip("/")
        if self.json:
            line = _json.encode(
                {
                    "time": self._now(),
                    "level": "info",
                    "logger": "dockvol.access",
                    "endpoint": ep,
                    "volume": volume,
                    "mount_id": mount_id,
                    "duration_ms": round(seconds * 1000, 3),
                    "outcome": outcome,
                    "error": err,
                }
            ).decode()
        else:
            tail = f": {err}" if err else ""
            line = (
                f"{self._now()} INFO dockvol.access: {ep} volume={volume!r} id={mount_id[:12]} "
                f"{seconds * 1000:.3f}ms {outcome}{tail}"
            )
        # Lines are gathered and written once per loop step: a write per request costs the
        # server as much as a tenth of a Get.
        if not self._pending:
            try:
                asyncio.get_running_loop().call_soon(self.flush)
            except RuntimeError:  # called outside the loop: write now
                self._pending.append(line)
                self.flush()
                return
        self._pending.append(line)

    def flush(self) -> None:
        if self._pending:
            self.stream.write("\n".join(self._pending) + "\n")
            self._pending.clear()
