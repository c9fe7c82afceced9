"""dockvol's HTTP server (src/dockvol/_transport/server.py) through a real unix socket.

The server runs in a thread with a small test app; each test speaks raw bytes to it, as the
engine's Go client does.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from dockvol._transport import unix
from dockvol._transport.server import HTTPServer

GET = b'POST /VolumeDriver.Get HTTP/1.1\r\nHost: \r\nContent-Length: 14\r\n\r\n{"Name":"v1"}\n'


def post(path: str, body: bytes = b"{}\n", extra: bytes = b"") -> bytes:
    return b"POST %s HTTP/1.1\r\nHost: \r\n%sContent-Length: %d\r\n\r\n%s" % (
        path.encode(),
        extra,
        len(body),
        body,
    )


class App:
    """Echoes method, path and body; ``/slow`` waits for ``release``; ``/boom`` raises."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.entered = threading.Event()
        self.started = 0

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        assert scope["type"] == "http"
        msg = await receive()
        path = scope["path"]
        self.started += 1
        if path == "/slow":
            self.entered.set()
            while not self.release.is_set():
                await asyncio.sleep(0.005)
        if path == "/boom":
            raise RuntimeError("secret internals")
        if path == "/big":  # over the size joined with the head: sent as head, then body
            big = b"x" * 300_000
            headers = [(b"content-length", b"%d" % len(big))]
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            await send({"type": "http.response.body", "body": big})
            return
        if path == "/stream":
            await send({"type": "http.response.start", "status": 200, "headers": []})
            for part in (b"one ", b"two ", b"three"):
                await send({"type": "http.response.body", "body": part, "more_body": True})
            await send({"type": "http.response.body", "body": b""})
            return
        body = json.dumps({"method": scope["method"], "path": path, "body": msg["body"].decode()})
        reply = body.encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(reply))]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": reply})


@contextmanager
def serving(tmp: Path, app: Any = None, **options: Any) -> Iterator[tuple[Path, HTTPServer]]:
    path = tmp / "s.sock"
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(path))
    sock.listen(1024)
    sock.setblocking(False)
    server = HTTPServer(app or App(), **options)
    thread = threading.Thread(target=lambda: asyncio.run(server.serve([sock])), daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.005)  # polling for readiness
    try:
        yield path, server
    finally:
        server.stop_threadsafe(force=True)
        thread.join(10)
        sock.close()


def connect(path: Path) -> socket.socket:
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(10)
    s.connect(str(path))
    return s


def read_response(s: socket.socket, buf: bytearray) -> tuple[bytes, dict[bytes, bytes], bytes]:
    """One response from ``s`` (Content-Length, chunked or up to EOF); the rest stays in buf."""
    while b"\r\n\r\n" not in buf:
        chunk = s.recv(65536)
        if not chunk:
            raise EOFError(bytes(buf))
        buf += chunk
    head, _, _ = bytes(buf).partition(b"\r\n\r\n")
    del buf[: len(head) + 4]
    lines = head.split(b"\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(b":") for line in lines[1:])}
    if b"content-length" in headers:
        n = int(headers[b"content-length"])
        while len(buf) < n:
            buf += s.recv(65536)
        body = bytes(buf[:n])
        del buf[:n]
    elif headers.get(b"transfer-encoding") == b"chunked":
        body = b""
        while True:
            while b"\r\n" not in buf:
                buf += s.recv(65536)
            line, _, _ = bytes(buf).partition(b"\r\n")
            size = int(line, 16)
            while len(buf) < len(line) + 2 + size + 2:
                buf += s.recv(65536)
            body += bytes(buf[len(line) + 2 : len(line) + 2 + size])
            del buf[: len(line) + 2 + size + 2]
            if size == 0:
                break
    else:
        while chunk := s.recv(65536):
            buf += chunk
        body = bytes(buf)
        buf.clear()
    return lines[0], headers, body


def exchange(path: Path, raw: bytes) -> tuple[bytes, dict[bytes, bytes], bytes]:
    s = connect(path)
    try:
        s.sendall(raw)
        return read_response(s, bytearray())
    finally:
        s.close()


def closed_by_server(s: socket.socket, within: float) -> bool:
    s.settimeout(within)
    try:
        while s.recv(65536):
            pass
        return True
    except (ConnectionResetError, BrokenPipeError):
        return True
    except TimeoutError:
        return False


# -- framing and keep-alive ----------------------------------------------------------------------
def test_keep_alive_serves_many_requests_on_one_connection(tmp_path: Path) -> None:
    with serving(tmp_path) as (path, _):
        s = connect(path)
        buf = bytearray()
        for i in range(5):
            s.sendall(post(f"/r{i}", b'{"n":%d}\n' % i))
            line, headers, body = read_response(s, buf)
            assert line == b"HTTP/1.1 200 OK"
            assert json.loads(body) == {
                "method": "POST",
                "path": f"/r{i}",
                "body": f'{{"n":{i}}}\n',
            }
            assert b"connection" not in headers
        s.close()


def test_pipelined_requests_are_answered_in_order(tmp_path: Path) -> None:
    app = App()
    with serving(tmp_path, app) as (path, _):
        s = connect(path)
        # The first is slow: the second, already received, must wait for it.
        s.sendall(post("/slow") + post("/fast") + post("/last"))
        assert app.entered.wait(10)
        s.settimeout(0.3)
        with pytest.raises(TimeoutError):
            s.recv(1)  # nothing may overtake the slow reply
        app.release.set()
        s.settimeout(10)
        buf = bytearray()
        paths = [json.loads(read_response(s, buf)[2])["path"] for _ in range(3)]
        assert paths == ["/slow", "/fast", "/last"]
        s.close()


def test_a_big_reply_arrives_whole_and_in_order(tmp_path: Path) -> None:
    with serving(tmp_path) as (path, _):
        s = connect(path)
        s.sendall(post("/small") + post("/big") + post("/after"))
        buf = bytearray()
        assert json.loads(read_response(s, buf)[2])["path"] == "/small"
        assert read_response(s, buf)[2] == b"x" * 300_000
        assert json.loads(read_response(s, buf)[2])["path"] == "/after"
        s.close()


def test_chunked_request_and_chunked_streamed_reply(tmp_path: Path) -> None:
    with serving(tmp_path) as (path, _):
        raw = (
            b"POST /echo HTTP/1.1\r\nHost: \r\nTransfer-Encoding: chunked\r\n\r\n"
            b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"
        )
        _, _, body = exchange(path, raw)
        assert json.loads(body)["body"] == "abcde"
        _, headers, body = exchange(path, post("/stream"))
        assert headers[b"transfer-encoding"] == b"chunked" and body == b"one two three"


def test_http_1_0_gets_its_reply_then_the_close(tmp_path: Path) -> None:
    with serving(tmp_path) as (path, _):
        s = connect(path)
        s.sendall(b"POST /old HTTP/1.0\r\nContent-Length: 2\r\n\r\n{}")
        _, headers, body = read_response(s, bytearray())
        assert json.loads(body)["path"] == "/old" and headers[b"connection"] == b"close"
        assert closed_by_server(s, within=5)
        s.close()
        # HTTP/1.0 asking for keep-alive keeps it.
        s = connect(path)
        buf = bytearray()
        for _ in range(2):
            s.sendall(b"GET /k HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
            _, headers, _ = read_response(s, buf)
            assert headers[b"connection"] == b"keep-alive"
        s.close()


def test_a_client_that_half_closes_still_gets_every_reply_then_the_close(tmp_path: Path) -> None:
    with serving(tmp_path) as (path, _):
        s = connect(path)
        s.sendall(post("/one") + post("/two"))
        s.shutdown(socket.SHUT_WR)
        buf = bytearray()
        assert json.loads(read_response(s, buf)[2])["path"] == "/one"
        assert json.loads(read_response(s, buf)[2])["path"] == "/two"
        assert closed_by_server(s, within=5)
        s.close()


def test_head_reply_has_no_body(tmp_path: Path) -> None:
    with serving(tmp_path) as (path, _):
        s = connect(path)
        s.sendall(b"HEAD /h HTTP/1.1\r\nHost: \r\n\r\n" + post("/after"))
        data = b""
        while data.count(b"HTTP/1.1") < 2 or not data.endswith(b"}"):
            data += s.recv(65536)
        first, second = data.split(b"HTTP/1.1 200 OK")[1:]
        assert first.endswith(b"\r\n\r\n")  # head only, then the next reply at once
        assert b'"path": "/after"' in second
        s.close()


def test_expect_100_continue(tmp_path: Path) -> None:
    with serving(tmp_path) as (path, _):
        s = connect(path)
        s.sendall(
            b"POST /e HTTP/1.1\r\nHost: \r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n"
        )
        assert s.recv(65536) == b"HTTP/1.1 100 Continue\r\n\r\n"
        s.sendall(b"{}")
        assert json.loads(read_response(s, bytearray())[2])["body"] == "{}"
        s.close()


# -- refusals --------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("raw", "status"),
    [
        (b"GARBAGE\r\n\r\n", b"400"),
        (b"POST /x HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n", b"400"),
        (b"POST /x HTTP/1.1\r\nX: " + b"a" * 70_000 + b"\r\n\r\n", b"431"),
        (b"POST /x HTTP/1.1\r\nContent-Length: 2000000\r\n\r\n" + b"x" * 300_000, b"413"),
        (b"POST /x HTTP/3.0\r\n\r\n", b"505"),
    ],
)
def test_bad_input_gets_a_json_error_the_client_can_read(
    tmp_path: Path, raw: bytes, status: bytes
) -> None:
    with serving(tmp_path) as (path, _):
        s = connect(path)
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            s.sendall(raw)  # the server answers early, and still lets the client read it
        line, headers, body = read_response(s, bytearray())
        s.close()
        assert line.split()[1] == status
        assert headers[b"content-type"] == b"application/json"
        assert headers[b"connection"] == b"close"
        assert isinstance(json.loads(body)["Err"], str)


def test_an_app_error_is_a_json_500_without_traceback(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with serving(tmp_path) as (path, _):
        line, _, body = exchange(path, post("/boom"))
        assert line.split()[1] == b"500"
        assert "secret internals" not in body.decode() and "Traceback" not in body.decode()
        assert json.loads(body)["Err"]
        line, _, _ = exchange(path, post("/fine"))  # the server goes on
        assert line.split()[1] == b"200"
    assert any(r.exc_info for r in caplog.records), "the traceback belongs in the log"


# -- bounds ----------------------------------------------------------------------------------------
def test_a_slow_request_is_cut_off_and_an_idle_one_kept(tmp_path: Path) -> None:
    with serving(tmp_path, request_timeout=0.3) as (path, _):
        slow = connect(path)
        slow.sendall(b"POST /x HTTP/1.1\r\nHost: \r\n")
        idle = connect(path)
        idle.sendall(post("/a"))
        read_response(idle, bytearray())
        assert closed_by_server(slow, within=5)
        assert not closed_by_server(idle, within=1.0)
        idle.settimeout(10)
        idle.sendall(post("/b"))
        assert json.loads(read_response(idle, bytearray())[2])["path"] == "/b"
        for s in (slow, idle):
            s.close()


def test_an_idle_connection_is_closed_after_the_keep_alive_time(tmp_path: Path) -> None:
    with serving(tmp_path, keep_alive_seconds=0.5) as (path, _):
        s = connect(path)
        s.sendall(post("/a"))
        read_response(s, bytearray())
        assert closed_by_server(s, within=5)
        s.close()


def test_over_the_cap_with_every_connection_busy_the_newcomer_gets_a_json_503(
    tmp_path: Path,
) -> None:
    app = App()
    with serving(tmp_path, app, max_connections=3) as (path, _):
        busy = [connect(path) for _ in range(3)]
        for s in busy:
            s.sendall(post("/slow"))
        deadline = time.monotonic() + 10
        while app.started < 3 and time.monotonic() < deadline:
            time.sleep(0.005)  # polling until all three are being served
        line, headers, body = exchange(path, post("/more"))
        assert line.split()[1] == b"503" and headers[b"content-type"] == b"application/json"
        assert "connections" in json.loads(body)["Err"]
        app.release.set()
        for s in busy:
            assert json.loads(read_response(s, bytearray())[2])["path"] == "/slow"
            s.close()


def test_over_the_cap_idle_connections_make_room(tmp_path: Path) -> None:
    with serving(tmp_path, max_connections=3) as (path, _):
        idle = []
        for _ in range(3):
            s = connect(path)
            s.sendall(post("/i"))
            read_response(s, bytearray())
            idle.append(s)
        line, _, _ = exchange(path, post("/new"))
        assert line.split()[1] == b"200"
        assert closed_by_server(idle[0], within=5)  # the oldest idle one went
        for s in idle:
            s.close()


# -- stopping --------------------------------------------------------------------------------------
DRAIN_SCRIPT = textwrap.dedent(
    """
    import asyncio, contextlib, pathlib, sys
    from dockvol._transport import server, unix

    async def app(scope, receive, send):
        await receive()
        if scope["path"] == "/slow":
            print("entered", flush=True)
            await asyncio.sleep(float(sys.argv[2]))
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-length", b"2")]})
        await send({"type": "http.response.body", "body": b"{}"})

    @contextlib.asynccontextmanager
    async def side():
        if sys.argv[3] == "fail":
            raise OSError("side listener could not start")
        yield

    path = pathlib.Path(sys.argv[1])
    sock = unix.bind_unix(path, None)
    srv = server.make_server(app, graceful_seconds=int(sys.argv[4]))
    try:
        server.run(srv, [sock], on_ready=lambda: print("ready", flush=True), beside=[side()])
    except OSError as exc:
        print("refused:", exc, flush=True)
    finally:
        unix.remove_socket(path, sock)
        sock.close()
        print("cleaned", flush=True)
    """
)


def start_script(tmp: Path, slow: float, side: str = "ok", graceful: int = 30) -> Any:
    path = tmp / "d.sock"
    proc = subprocess.Popen(
        [sys.executable, "-c", DRAIN_SCRIPT, str(path), str(slow), side, str(graceful)],
        stdout=subprocess.PIPE,
        text=True,
    )
    return path, proc


def test_sigterm_lets_the_request_in_flight_finish_then_removes_the_socket(tmp_path: Path) -> None:
    path, proc = start_script(tmp_path, slow=1.0)
    try:
        assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
        idle = connect(path)
        idle.sendall(post("/fast"))
        read_response(idle, bytearray())
        s = connect(path)
        s.sendall(post("/slow"))
        assert proc.stdout.readline() == "entered\n"  # the app has it: now stop
        proc.send_signal(signal.SIGTERM)
        line, headers, body = read_response(s, bytearray())
        assert line.split()[1] == b"200" and body == b"{}"
        assert headers[b"connection"] == b"close"  # stopping: no next request on it
        assert closed_by_server(idle, within=5)  # the idle one is closed at once
        assert proc.wait(20) == 0
        assert proc.stdout.read().strip() == "cleaned"
        assert not path.exists()
    finally:
        proc.kill()
        proc.wait()


def test_the_drain_is_bounded_by_graceful_seconds(tmp_path: Path) -> None:
    path, proc = start_script(tmp_path, slow=60, graceful=1)
    try:
        assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
        s = connect(path)
        s.sendall(post("/slow"))
        assert proc.stdout.readline() == "entered\n"
        began = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0
        assert time.monotonic() - began < 15
        assert closed_by_server(s, within=5)
        assert not path.exists()
    finally:
        proc.kill()
        proc.wait()


def test_a_side_listener_failing_at_start_still_removes_the_socket(tmp_path: Path) -> None:
    path, proc = start_script(tmp_path, slow=0, side="fail")
    assert proc.wait(20) == 0
    assert proc.stdout is not None and "refused: side listener" in proc.stdout.read()
    assert not path.exists()


# -- the socket file -------------------------------------------------------------------------------
def test_remove_socket_removes_our_file_whether_the_socket_is_open_or_closed(
    tmp_path: Path,
) -> None:
    for close_first in (False, True):
        path = tmp_path / f"o{close_first}.sock"
        sock = unix.bind_unix(path, None)
        if close_first:
            sock.close()
        unix.remove_socket(path, sock)
        sock.close()
        assert not path.exists()


def test_remove_socket_leaves_a_file_that_is_no_longer_ours(tmp_path: Path) -> None:
    path = tmp_path / "r.sock"
    sock = unix.bind_unix(path, None)
    sock.close()
    path.unlink()
    other = socket.socket(socket.AF_UNIX)
    other.bind(str(path))  # another process's socket now
    unix.remove_socket(path, sock)
    assert path.exists()
    other.close()
    os.unlink(path)


# -- embedding -------------------------------------------------------------------------------------
def test_lifespan_startup_runs_before_serving_and_shutdown_at_stop(tmp_path: Path) -> None:
    events: list[str] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                msg = await receive()
                events.append(msg["type"])
                await send({"type": msg["type"] + ".complete"})
                if msg["type"] == "lifespan.shutdown":
                    return
        await receive()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    path = tmp_path / "l.sock"
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(path))
    sock.listen()
    sock.setblocking(False)
    server = HTTPServer(app, lifespan=True)
    thread = threading.Thread(target=lambda: asyncio.run(server.serve([sock])))
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.005)  # polling for readiness
    assert events == ["lifespan.startup"]
    assert exchange(path, post("/x"))[2] == b"ok"
    server.stop_threadsafe()
    thread.join(10)
    sock.close()
    assert events == ["lifespan.startup", "lifespan.shutdown"]
