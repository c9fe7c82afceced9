"""The machine's floor: the same client against the smallest possible asyncio HTTP responder.

No parsing, no routing, no JSON: it answers every request with fixed bytes. Whatever latency
this shows is the cost of the kernel, the event loop and the client on this machine at this
moment, which no plugin can go under. Printed next to the plugin's numbers to judge them.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from typing import Any

from . import common, stats
from .rawclient import Connection, request, timed

_SERVER = r"""
import asyncio, sys
REPLY = (b"HTTP/1.1 200 OK\r\ncontent-type: application/vnd.docker.plugins.v1+json\r\n"
         b"content-length: 2\r\n\r\n{}")
class P(asyncio.Protocol):
    def connection_made(self, t): self.t, self.buf = t, b""
    def data_received(self, d):
        self.buf += d
        while True:  # a request is complete once its headers and Content-Length body are in
            i = self.buf.find(b"\r\n\r\n")
            if i < 0: return
            head = self.buf[:i].lower()
            j = head.find(b"content-length:")
            n = int(head[j + 15:].split(b"\r\n")[0]) if j >= 0 else 0
            if len(self.buf) < i + 4 + n: return
            self.buf = self.buf[i + 4 + n:]
            self.t.write(REPLY)
async def main():
    srv = await asyncio.get_running_loop().create_unix_server(P, sys.argv[1])
    await srv.serve_forever()
asyncio.run(main())
"""


class Floor:
    """The floor server, running: ``with Floor() as f: f.timed(requests)``."""

    def __enter__(self) -> Floor:
        self.base = common.tmpdir("dvfl")
        sock = self.base / "f.sock"
        self.proc = subprocess.Popen([sys.executable, "-c", _SERVER, str(sock)])
        deadline = time.monotonic() + 20
        while True:
            try:
                self.conn = Connection(str(sock))
                return self
            except OSError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    self.__exit__()
                    raise RuntimeError("the floor server did not start") from None
                time.sleep(0.01)  # polling for the socket

    def timed(self, reqs: list[bytes]) -> tuple[list[float], float]:
        """Latencies of ``reqs``, and the server's CPU seconds for them."""
        before = stats.cpu_seconds(self.proc.pid)
        lat = timed(self.conn, reqs)
        return lat, stats.cpu_seconds(self.proc.pid) - before

    def __exit__(self, *exc: object) -> None:
        if hasattr(self, "conn"):
            self.conn.close()
        self.proc.kill()
        self.proc.wait()
        shutil.rmtree(self.base, ignore_errors=True)


def measure(n: int) -> dict[str, Any]:
    """The floor alone: ``n`` requests after a warm-up."""
    reqs = [request("VolumeDriver.Get", {"Name": "x"})] * n
    with Floor() as f:
        f.timed(reqs[: min(500, n)])
        lat, cpu = f.timed(reqs)
    return row(lat, cpu, n)


def row(lat: list[float], cpu: float, n: int) -> dict[str, Any]:
    return {
        "endpoint": "floor",
        "concurrency": 1,
        "n": n,
        "p50_ms": stats.ms(stats.percentile(lat, 50)),
        "p99_ms": stats.ms(stats.percentile(lat, 99)),
        "server_cpu_us": cpu / n * 1e6,
    }
