"""The connection guard (request deadline, head size, connection cap) of dockvol's HTTP server.

The server runs in a thread on a unix socket with small limits, so that each rule can be seen
at work quickly.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from dockvol._transport import guard
from dockvol._transport.server import HTTPServer

TIMEOUT = 0.5
CAP = 20


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    while (await receive()).get("more_body"):
        pass
    if scope["path"] == "/slow":
        await asyncio.sleep(2 * TIMEOUT)  # a long call (Mount): busy, never evicted
    body = json.dumps({"path": scope["path"]}).encode()
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": body})


@contextmanager
def serving(tmp: Path) -> Iterator[Path]:
    path = tmp / "g.sock"
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(path))
    sock.listen(1024)
    sock.setblocking(False)
    server = HTTPServer(app, request_timeout=TIMEOUT, max_connections=CAP)
    thread = threading.Thread(target=lambda: asyncio.run(server.serve(sockets=[sock])))
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.01)  # polling for readiness
    try:
        yield path
    finally:
        server.stop_threadsafe()
        thread.join(10)
        sock.close()


def connect(path: Path) -> socket.socket:
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(10)
    s.connect(str(path))
    return s


def request(path_or_sock: Path | socket.socket, target: str = "/VolumeDriver.Get") -> bytes:
    s = connect(path_or_sock) if isinstance(path_or_sock, Path) else path_or_sock
    body = b'{"Name": "v"}\n'
    s.sendall(
        f"POST {target} HTTP/1.1\r\nHost: \r\nContent-Length: {len(body)}\r\n\r\n".encode() + body
    )
    data = b""
    while b"}" not in data:
        chunk = s.recv(4096)
        if not chunk:
            break
        data += chunk
    if isinstance(path_or_sock, Path):
        s.close()
    return data


def closed_by_server(s: socket.socket, within: float) -> bool:
    """True once the server closes ``s`` (recv gives EOF or reset) within ``within`` seconds."""
    s.settimeout(within)
    try:
        while True:
            data = s.recv(4096)
            if not data:
                return True
    except (ConnectionResetError, BrokenPipeError):
        return True
    except TimeoutError:
        return False


def test_slow_request_is_cut_off_after_the_deadline(tmp_path: Path) -> None:
    with serving(tmp_path) as path:
        silent = connect(path)  # connects, never sends
        partial = connect(path)
        partial.sendall(b"POST /VolumeDriver.Get HTTP/1.1\r\nHost: \r\n")  # headers unfinished
        body = connect(path)
        body.sendall(b"POST /VolumeDriver.Get HTTP/1.1\r\nContent-Length: 100\r\n\r\n{")
        for s in (silent, partial, body):
            assert closed_by_server(s, within=10 * TIMEOUT)
            s.close()


def test_idle_keep_alive_connection_is_never_closed(tmp_path: Path) -> None:
    with serving(tmp_path) as path:
        s = connect(path)
        assert b'"/a"' in request(s, "/a")
        # Idle between requests for several deadlines: the engine keeps such connections.
        assert not closed_by_server(s, within=4 * TIMEOUT)
        s.settimeout(10)
        assert b'"/b"' in request(s, "/b")
        s.close()


def test_long_call_is_not_cut_off(tmp_path: Path) -> None:
    with serving(tmp_path) as path:
        assert b'"/slow"' in request(path, "/slow")


def test_connection_cap_evicts_slow_clients_and_keeps_serving(tmp_path: Path) -> None:
    with serving(tmp_path) as path:
        idle = connect(path)
        assert b'"/idle"' in request(idle, "/idle")
        hogs = []
        for _ in range(3 * CAP):
            h = connect(path)
            h.sendall(b"POST /x HTTP/1.1\r\n")
            hogs.append(h)
        # Every new request is still served, within the cap, while hogs keep arriving.
        for i in range(5):
            assert f'"/n{i}"'.encode() in request(path, f"/n{i}")
        closed = sum(closed_by_server(h, within=0.2) for h in hogs)
        assert closed >= 2 * CAP  # the oldest slow clients made room
        for h in hogs:
            h.close()
        idle.close()


def test_refusals_are_json_objects(tmp_path: Path) -> None:
    with serving(tmp_path) as path:
        for raw in (
            b"GARBAGE\r\n\r\n",
            b"POST /x HTTP/1.1\r\nContent-Length: nope\r\n\r\n",
            b"POST /x HTTP/1.1\r\nX: " + b"a" * (guard.MAX_HEAD + 10) + b"\r\n\r\n",
        ):
            s = connect(path)
            s.sendall(raw)
            data = b""
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
            s.close()
            head, _, body = data.partition(b"\r\n\r\n")
            assert head.split()[1] in (b"400", b"431"), head
            assert b"application/json" in head
            assert isinstance(json.loads(body)["Err"], str)
