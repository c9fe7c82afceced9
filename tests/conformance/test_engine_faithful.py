"""The kit is engine-faithful by observation, against a real engine (20.10.24 here): the wire
client sends the very bytes the engine sends, and the kit's reading of Get replies is never more
lenient than the engine's."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from dockvol.testing import WireClient
from dockvol.testing._http import Connection
from dockvol.testing.godecode import REPLIES, GoDecodeError, decode
from tests.support.engine import ENGINE_VERSIONS, Engine


class RecordingPlugin:
    """A minimal correct plugin that keeps every raw request it receives."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.requests: list[bytes] = []
        self.volumes: set[str] = set()
        #: Canned Get replies by volume name.
        self.gets: dict[str, object] = {}
        #: Paths whose next request gets its connection closed without a reply.
        self.drop_once: set[str] = set()
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
            path = head.split(b" ")[1].decode()
            with self.lock:
                self.requests.append(head + b"\r\n\r\n" + body)
                if path in self.drop_once:  # a transport error: no reply at all
                    self.drop_once.discard(path)
                    return
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
        if path == "/VolumeDriver.Get" and name in self.gets:
            return self.gets[name]
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
        # A stale socket makes the engine retry it for ~15 s on every lookup.
        self.path.unlink(missing_ok=True)


@pytest.fixture(scope="module", params=ENGINE_VERSIONS)
def engine(request: pytest.FixtureRequest) -> Iterator[Engine]:
    eng = Engine.start(version=request.param)  # fails (never skips) when it cannot start
    try:
        yield eng
    finally:
        eng.stop()


@pytest.fixture(scope="module")
def rec(engine: Engine) -> Iterator[RecordingPlugin]:
    # One plugin for the module: once the engine knows a plugin, it asks it about every unknown
    # name, and a plugin gone from under it costs ~15 s of retries per lookup.
    plugin = RecordingPlugin(engine.plugins_dir / "rec.sock")
    try:
        yield plugin
    finally:
        plugin.close()


@pytest.mark.engine
def test_wire_client_sends_what_the_engine_sends(
    engine: Engine, rec: RecordingPlugin, short_dir: Path
) -> None:
    rec.requests.clear()
    engine.docker("volume", "create", "-d", "rec", "framing-vol")
    engine.docker("volume", "ls")
    engine.docker("volume", "rm", "framing-vol")
    seen = {r.split(b" ")[1].decode().lstrip("/") for r in rec.requests}
    assert {"Plugin.Activate", "VolumeDriver.Get", "VolumeDriver.Create"} <= seen
    assert {"VolumeDriver.List", "VolumeDriver.Remove"} <= seen

    mine = RecordingPlugin(short_dir / "mine.sock")
    try:
        client = WireClient(str(mine.path))
        with Connection(client.address, engine=engine.release) as conn:  # its Host header
            for raw in rec.requests:
                head, _, body = raw.partition(b"\r\n\r\n")
                endpoint = head.split(b" ")[1].decode().lstrip("/")
                client.call(endpoint, json.loads(body) if body else None, conn=conn)
    finally:
        mine.close()
    assert mine.requests == rec.requests


def _vol(name: str, **fields: object) -> dict[str, object]:
    return {"Volume": {"Name": name, **fields}}


GET_REPLIES: dict[str, object] = {
    "ok-plain": _vol("ok-plain"),
    "ok-created": _vol("ok-created", CreatedAt="2026-11-28T11:00:00.123456789Z"),
    "ok-offset": _vol("ok-offset", CreatedAt="2026-11-28T11:00:00+01:00"),
    "ok-nulls": _vol("ok-nulls", CreatedAt=None, Status=None, Mountpoint=None),
    "ok-status": _vol("ok-status", Status={"size": "1G"}),
    "ok-lowercase-keys": {
        "volume": {"name": "ok-lowercase-keys", "createdat": "2026-11-28T11:00:00Z"}
    },
    "bad-created-empty": _vol("bad-created-empty", CreatedAt=""),
    "bad-created-no-zone": _vol("bad-created-no-zone", CreatedAt="2026-11-28T11:00:00"),
    "bad-created-lowercase": _vol("bad-created-lowercase", CreatedAt="2026-11-28t11:00:00z"),
    "bad-created-number": _vol("bad-created-number", CreatedAt=1764327600),
    "bad-status-string": _vol("bad-status-string", Status="ok"),
    "bad-status-array": _vol("bad-status-array", Status=["ok"]),
    "bad-name-number": _vol("bad-name-number", Mountpoint=7),
    # Accepted by 20.10's Go (before 1.20) and refused by newer engines' strict RFC 3339
    # parser: the kit refuses them, on purpose.
    "strict-one-digit-hour": _vol("strict-one-digit-hour", CreatedAt="2026-11-28T1:00:00Z"),
    "strict-comma-fraction": _vol("strict-comma-fraction", CreatedAt="2026-11-28T11:00:00,5Z"),
}


def kit_accepts(reply: object) -> bool:
    try:
        out = decode(reply, REPLIES["VolumeDriver.Get"], "")
    except GoDecodeError:
        return False
    return bool(out and out.get("Volume"))


@pytest.mark.engine
def test_kit_reads_get_replies_as_the_engine_does(engine: Engine, rec: RecordingPlugin) -> None:
    rec.gets = GET_REPLIES
    try:
        engine_accepts = {
            name: engine.docker("volume", "inspect", name, check=False).returncode == 0
            for name in GET_REPLIES
        }
    finally:
        rec.gets = {}
    kit = {name: kit_accepts(reply) for name, reply in GET_REPLIES.items()}
    assert {n for n, ok in engine_accepts.items() if ok} == {
        n for n in GET_REPLIES if n.startswith(("ok-", "strict-"))
    }
    assert {n for n, ok in kit.items() if ok} == {n for n in GET_REPLIES if n.startswith("ok-")}


@pytest.mark.engine
def test_a_dropped_call_is_retried_with_an_empty_body(engine: Engine, rec: RecordingPlugin) -> None:
    """Why the empty-body check exists: the engine's retry re-sends a consumed body."""
    rec.requests.clear()
    rec.drop_once = {"/VolumeDriver.Create"}
    engine.docker("volume", "create", "-d", "rec", "retried-vol", check=False)
    creates = [r for r in rec.requests if r.startswith(b"POST /VolumeDriver.Create ")]
    assert len(creates) == 2
    opts = b"{}" if engine.release == "20.10" else b"null"  # what each engine's own CLI sends
    assert creates[0].endswith(b'{"Name":"retried-vol","Opts":' + opts + b"}\n")
    assert b"\r\nContent-Length: 0\r\n" in creates[1] and creates[1].endswith(b"\r\n\r\n")
