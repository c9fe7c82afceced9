"""Fuzzing, at a bounded budget: the JSON layer and every endpoint's fields (in-process, the real
local driver on a temporary root), and the HTTP layer (raw bytes to a real ``dockvol serve``).

Invariants: nothing crashes; every reply the app writes is a JSON object; every mountpoint is a
real directory under ``--root``; no file appears outside ``--root`` and the state directory; the
plugin keeps answering and its memory stays bounded.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dockvol._registry.sqlite import SqliteRegistry
from dockvol._sdk.secrets import SecretStore
from dockvol._service.service import VolumeService
from dockvol._wire import protocol as p
from dockvol._wire.app import PluginApp
from dockvol.drivers.local import LocalDriver
from tests.security.corpus import ATTACK_NAMES, ATTACK_OPTION_VALUES
from tests.support.plugin import Plugin, call

ENDPOINTS = list(p.ENDPOINTS)
FUZZ = settings(
    max_examples=int(os.environ.get("DOCKVOL_FUZZ_EXAMPLES", "300")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    database=None,  # reproducible in CI: no example database carried between runs
)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=50),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=12,
)
names = st.one_of(st.sampled_from(ATTACK_NAMES), st.text(max_size=300), json_values)
ids = st.one_of(
    st.sampled_from(["a" * 64, "b" * 64, "", "../x", "\x00", "a" * 300]),
    st.text(max_size=80),
    json_values,
)
opt_keys = st.sampled_from(["uid", "gid", "mode", "on_remove", "size", "o", "device", "uid\n"])
opt_values = st.one_of(st.sampled_from(ATTACK_OPTION_VALUES), st.text(max_size=40))
opts = st.one_of(
    st.none(),
    st.dictionaries(opt_keys, opt_values, max_size=4),
    st.dictionaries(st.text(max_size=8), st.text(max_size=8), max_size=3),
    json_values,
)
fields = st.fixed_dictionaries(
    {}, optional={"Name": names, "ID": ids, "Opts": opts, "Size": json_values}
)


def bodies() -> st.SearchStrategy[bytes]:
    return st.one_of(
        fields.map(lambda d: json.dumps(d).encode() + b"\n"),
        fields.map(lambda d: json.dumps({k.lower(): v for k, v in d.items()}).encode()),
        json_values.map(lambda v: json.dumps(v).encode()),
        st.binary(max_size=200),
        st.just(b""),
    )


class Harness:
    """The real app, service, SQLite registry and local driver, driven by direct ASGI calls."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.root = base / "root"
        self.state = base / "state"
        self.outside = base / "outside"
        self.outside.mkdir()
        (self.outside / "sentinel").write_text("keep")
        driver = LocalDriver(self.root)
        driver.setup()
        self.service = VolumeService(driver, SqliteRegistry(self.state), secrets=SecretStore())
        self.service.reconcile()
        self.app = PluginApp(self.service)
        self.loop = asyncio.new_event_loop()

    def close(self) -> None:
        self.service.close()
        self.loop.close()

    def call(self, path: str, body: bytes, method: str = "POST") -> tuple[int, Any]:
        sent: list[dict[str, Any]] = []

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": body, "more_body": False}

        async def send(msg: dict[str, Any]) -> None:
            sent.append(msg)

        scope = {
            "type": "http",
            "method": method,
            "path": path,
            "headers": [(b"content-length", str(len(body)).encode())],
        }
        self.loop.run_until_complete(self.app(scope, receive, send))
        status = sent[0]["status"]
        data = b"".join(m.get("body", b"") for m in sent[1:])
        return status, json.loads(data)

    def check_disk(self) -> None:
        assert sorted(os.listdir(self.base)) == ["outside", "root", "state"]
        assert os.listdir(self.outside) == ["sentinel"]
        assert (self.outside / "sentinel").read_text() == "keep"
        for entry in os.scandir(self.root):
            # Only real directories, named by the framework's keys.
            assert stat.S_ISDIR(entry.stat(follow_symlinks=False).st_mode), entry.path


@pytest.fixture(scope="module")
def harness(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Harness]:
    h = Harness(tmp_path_factory.mktemp("fuzz"))
    try:
        yield h
    finally:
        h.close()


def _check_reply(h: Harness, path: str, status: int, reply: Any) -> None:
    assert status in (200, 413)
    assert isinstance(reply, dict)
    if "Err" in reply:
        assert isinstance(reply["Err"], str) and reply["Err"]
        assert "Traceback" not in reply["Err"]
        return
    if path == p.MOUNT:
        mp = Path(reply["Mountpoint"])
        assert mp.parent == h.root and mp.is_dir() and not mp.is_symlink()
    if path == p.GET:
        vol = reply["Volume"]
        assert isinstance(vol["Name"], str) and isinstance(vol["Status"], dict)


@FUZZ
@given(path=st.sampled_from([*ENDPOINTS, "/", "/x", "/../VolumeDriver.Get"]), body=bodies())
def test_every_endpoint_answers_fuzzed_bodies_with_a_json_object(
    harness: Harness, path: str, body: bytes
) -> None:
    status, reply = harness.call(path, body)
    _check_reply(harness, path, status, reply)
    harness.check_disk()


@FUZZ
@given(
    name=names,
    mount_ids=st.lists(ids, min_size=1, max_size=3),
    options=opts,
    steps=st.lists(st.sampled_from(["mount", "unmount", "get", "remove", "list"]), max_size=8),
)
def test_fuzzed_lifecycles_stay_under_root(
    harness: Harness, name: Any, mount_ids: list[Any], options: Any, steps: list[str]
) -> None:
    h = harness
    status, reply = h.call(p.CREATE, json.dumps({"Name": name, "Opts": options}).encode())
    _check_reply(h, p.CREATE, status, reply)
    for i, step in enumerate(steps):
        mid = mount_ids[i % len(mount_ids)]
        path = {"mount": p.MOUNT, "unmount": p.UNMOUNT, "get": p.GET}.get(step)
        path = path or {"remove": p.REMOVE, "list": p.LIST}[step]
        status, reply = h.call(path, json.dumps({"Name": name, "ID": mid}).encode())
        _check_reply(h, path, status, reply)
    # Leave nothing mounted, then remove: the registry and the disk must agree again.
    for mid in mount_ids:
        for _ in range(len(steps) + 1):
            h.call(p.UNMOUNT, json.dumps({"Name": name, "ID": mid}).encode())
    status, reply = h.call(p.REMOVE, json.dumps({"Name": name}).encode())
    _check_reply(h, p.REMOVE, status, reply)
    h.check_disk()
    if isinstance(name, str):
        listed = [v["Name"] for v in h.call(p.LIST, b"{}\n")[1]["Volumes"]]
        assert name not in listed


def test_wrong_method_and_oversized_body(harness: Harness) -> None:
    status, reply = harness.call(p.GET, b'{"Name": "x"}', method="GET")
    assert status == 200 and "POST" in reply["Err"]
    status, reply = harness.call(p.CREATE, b"x" * (2 << 20))
    assert status == 413 and "larger than" in reply["Err"]


# --- The HTTP layer, against a real server -----------------------------------------------------

methods = st.sampled_from(["POST", "GET", "PUT", "DELETE", "OPTIONS", "CONNECT", "PRI", "P\x00ST"])
targets = st.one_of(
    st.sampled_from(ENDPOINTS),
    st.sampled_from(["*", "/%00", "//VolumeDriver.Get", "/VolumeDriver.Get?x=1", "http://h/x"]),
    st.text(alphabet=st.characters(min_codepoint=33, max_codepoint=126), max_size=40),
)
header_lines = st.lists(
    st.one_of(
        st.sampled_from(
            [
                b"Host: ",
                b"Transfer-Encoding: chunked",
                b"Content-Length: -1",
                b"Content-Length: 99999999999999999999",
                b"Content-Length: 5, 6",
                b"Expect: 100-continue",
                b"Connection: upgrade",
                b"Upgrade: websocket",
                b"Content-Type: application/json",
            ]
        ),
        st.binary(max_size=60).filter(lambda b: b"\n" not in b),
    ),
    max_size=5,
)


@st.composite
def raw_requests(draw: st.DrawFn) -> bytes:
    if draw(st.booleans()):
        return draw(st.binary(max_size=300))
    line = f"{draw(methods)} {draw(targets)} HTTP/1.{draw(st.sampled_from(['0', '1', '9']))}"
    body = draw(bodies())
    heads = draw(header_lines)
    if draw(st.booleans()):
        heads = [*heads, f"Content-Length: {len(body)}".encode()]
    return (
        line.encode("utf-8", "surrogateescape") + b"\r\n" + b"\r\n".join(heads) + b"\r\n\r\n" + body
    )


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Plugin]:
    base = tmp_path_factory.mktemp("fz")
    plugin = Plugin.start(base / "p.sock", base / "root", base / "state", "--log-level", "error")
    try:
        yield plugin
    finally:
        assert plugin.stop() == 0


def _exchange(sock_path: Path, raw: bytes) -> bytes:
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(3)
    s.connect(str(sock_path))
    data = b""
    try:
        s.sendall(raw)
        s.shutdown(socket.SHUT_WR)  # the server sees the end; it answers or closes
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    except TimeoutError:
        pass  # an incomplete request: the server waits (the guard's deadline ends it)
    except (ConnectionResetError, BrokenPipeError):
        pass
    finally:
        s.close()
    return data


def _responses(data: bytes) -> Iterator[tuple[bytes, bytes]]:
    """(status line, body) of each Content-Length-framed response in ``data``."""
    while data:
        head, sep, rest = data.partition(b"\r\n\r\n")
        assert sep, data[:200]
        lines = head.split(b"\r\n")
        length = 0
        for h in lines[1:]:
            k, _, v = h.partition(b":")
            if k.strip().lower() == b"content-length":
                length = int(v)
        yield lines[0], rest[:length]
        data = rest[length:]


@FUZZ
@given(raw=raw_requests())
def test_raw_http_gets_json_objects_or_a_closed_connection(served: Plugin, raw: bytes) -> None:
    for status_line, body in _responses(_exchange(served.sock, raw)):
        assert status_line.startswith(b"HTTP/1.1 "), status_line
        assert isinstance(json.loads(body), dict), (status_line, body)


def test_server_survives_the_http_fuzz_with_bounded_memory(served: Plugin) -> None:
    assert served.proc is not None and served.proc.poll() is None
    status, reply = call(served.sock, "VolumeDriver.List", {})
    assert status == 200 and isinstance(reply["Volumes"], list)
    rss_kib = next(
        int(line.split()[1])
        for line in Path(f"/proc/{served.proc.pid}/status").read_text().splitlines()
        if line.startswith("VmRSS:")
    )
    assert rss_kib < 300 * 1024, f"plugin uses {rss_kib} KiB after fuzzing"
