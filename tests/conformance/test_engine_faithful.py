"""The wire client is engine-faithful by observation: a real engine (20.10.24 here) calls a
recording plugin, and ``WireClient`` must send the very same bytes for the very same calls."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from dockvol.testing import WireClient
from tests.support.engine import Engine


class RecordingPlugin:
    """A minimal correct plugin that keeps every raw request it receives."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.requests: list[bytes] = []
        self.volumes: set[str] = set()
        self.lock = threading.Lock()
        self.srv = socket.socket(socket.AF_UNIX)
        self.srv.bind(str(path))
        self.srv.listen(64)
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.srv.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        with conn:
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = conn.recv(65536)
                if not chunk:
                    return
                data += chunk
            head, _, body = data.partition(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n")[1:]:
                k, _, v = line.partition(b":")
                if k.strip().lower() == b"content-length":
                    length = int(v)
            while len(body) < length:
                body += conn.recv(65536)
            with self.lock:
                self.requests.append(head + b"\r\n\r\n" + body)
            path = head.split(b" ")[1].decode()
            reply = json.dumps(self._answer(path, json.loads(body) if body.strip() else {}))
            out = reply.encode()
            # Connection: close, so the engine never reuses a connection this server drops.
            conn.sendall(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/vnd.docker.plugins.v1+json\r\n"
                b"Connection: close\r\nContent-Length: "
                + str(len(out)).encode()
                + b"\r\n\r\n"
                + out
            )

    def _answer(self, path: str, body: dict[str, object]) -> object:
        name = str(body.get("Name", ""))
        with self.lock:
            if path == "/Plugin.Activate":
                return {"Implements": ["VolumeDriver"]}
            if path == "/VolumeDriver.Capabilities":
                return {"Capabilities": {"Scope": "local"}}
            if path == "/VolumeDriver.Create":
                self.volumes.add(name)
                return {}
            if path == "/VolumeDriver.Get":
                if name in self.volumes:
                    return {"Volume": {"Name": name}}
                return {"Err": "no such volume"}
            if path == "/VolumeDriver.List":
                return {"Volumes": [{"Name": n} for n in sorted(self.volumes)]}
            if path == "/VolumeDriver.Remove":
                self.volumes.discard(name)
            return {}

    def close(self) -> None:
        self.srv.close()


@pytest.fixture(scope="module")
def engine() -> Iterator[Engine]:
    eng = Engine.start()  # fails (never skips) when the engine cannot start
    try:
        yield eng
    finally:
        eng.stop()


@pytest.mark.engine
def test_wire_client_sends_what_the_engine_sends(engine: Engine, short_dir: Path) -> None:
    rec = RecordingPlugin(engine.plugins_dir / "rec.sock")
    try:
        engine.docker("volume", "create", "-d", "rec", "framing-vol")
        engine.docker("volume", "ls")
        engine.docker("volume", "rm", "framing-vol")
    finally:
        rec.close()
    seen = {r.split(b" ")[1].decode().lstrip("/") for r in rec.requests}
    assert {"Plugin.Activate", "VolumeDriver.Get", "VolumeDriver.Create"} <= seen
    assert {"VolumeDriver.List", "VolumeDriver.Remove"} <= seen

    mine = RecordingPlugin(short_dir / "mine.sock")
    try:
        client = WireClient(str(mine.path))
        for raw in rec.requests:
            head, _, body = raw.partition(b"\r\n\r\n")
            endpoint = head.split(b" ")[1].decode().lstrip("/")
            client.call(endpoint, json.loads(body) if body else None)
    finally:
        mine.close()
    assert mine.requests == rec.requests
