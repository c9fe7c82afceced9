"""The wire client sends exactly what the engine sends; replies are read as Go reads them."""

from __future__ import annotations

import gzip
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from dockvol.testing import Address, WireClient, resolve_endpoint
from dockvol.testing.godecode import REPLIES, GoDecodeError, decode, field, parse_rfc3339


class Recorder:
    """A unix socket server that records raw requests and answers with canned bytes."""

    def __init__(self, path: Path, reply: bytes) -> None:
        self.path, self.reply = path, reply
        self.requests: list[bytes] = []
        self.srv = socket.socket(socket.AF_UNIX)
        self.srv.bind(str(path))
        self.srv.listen(8)
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.srv.accept()
            except OSError:
                return
            with conn:
                data = b""
                while b"\r\n\r\n" not in data:
                    data += conn.recv(65536)
                head, _, body = data.partition(b"\r\n\r\n")
                length = next(
                    int(line.split(b":")[1])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length:")
                )
                while len(body) < length:
                    body += conn.recv(65536)
                self.requests.append(head + b"\r\n\r\n" + body)
                conn.sendall(self.reply)

    def close(self) -> None:
        self.srv.close()


@pytest.fixture
def recorder(short_dir: Path) -> Iterator[Recorder]:
    r = Recorder(short_dir / "rec.sock", b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}")
    try:
        yield r
    finally:
        r.close()


def engine_request(path: str, body: bytes) -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: \r\nUser-Agent: Go-http-client/1.1\r\n"
        f"Content-Length: {len(body)}\r\n"
        "Accept: application/vnd.docker.plugins.v1.2+json\r\n\r\n"
    ).encode() + body


def test_list_request_is_byte_for_byte_the_engines(recorder: Recorder) -> None:
    reply = WireClient(str(recorder.path)).call("list")
    assert reply.status == 200 and reply.json == {}
    assert recorder.requests == [engine_request("/VolumeDriver.List", b"{}\n")]


def test_activate_has_an_empty_body_and_content_length_zero(recorder: Recorder) -> None:
    WireClient(str(recorder.path)).call("activate")
    assert recorder.requests == [engine_request("/Plugin.Activate", b"")]


def test_bodies_are_encoded_as_gos_json_encoder_does(recorder: Recorder) -> None:
    WireClient(str(recorder.path)).call("Get", {"Name": "a<b>&ü"})
    body = '{"Name":"a\\u003cb\\u003e\\u0026ü"}\n'.encode()
    assert recorder.requests == [engine_request("/VolumeDriver.Get", body)]


def test_gzip_replies_are_decompressed_like_gos_transport(short_dir: Path) -> None:
    data = gzip.compress(b'{"Volumes": []}')
    head = f"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: {len(data)}\r\n\r\n"
    rec = Recorder(short_dir / "gz.sock", head.encode() + data)
    try:
        assert WireClient(str(rec.path)).call("ls").json == {"Volumes": []}
    finally:
        rec.close()


def test_tcp_requests_carry_host_and_accept_encoding_as_gos_transport() -> None:
    srv = socket.create_server(("127.0.0.1", 0))
    port = srv.getsockname()[1]
    got: list[bytes] = []

    def serve() -> None:
        conn, _ = srv.accept()
        with conn:
            data = b""
            while not data.endswith(b"{}\n"):
                data += conn.recv(65536)
            got.append(data)
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}")

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    try:
        WireClient(f"tcp://127.0.0.1:{port}").call("list")
    finally:
        srv.close()
    assert got == [
        (
            f"POST /VolumeDriver.List HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            "User-Agent: Go-http-client/1.1\r\nContent-Length: 3\r\n"
            "Accept: application/vnd.docker.plugins.v1.2+json\r\nAccept-Encoding: gzip\r\n\r\n{}\n"
        ).encode()
    ]


def test_find_plugin_as_the_engine_does(tmp_path: Path) -> None:
    from dockvol.testing import find_plugin

    socks, etc, lib = tmp_path / "run", tmp_path / "etc", tmp_path / "lib"
    for d in (socks / "b", etc, lib):
        d.mkdir(parents=True)
    dirs: dict[str, Any] = {"sockets_dir": str(socks), "spec_dirs": (str(etc), str(lib))}
    (socks / "a.sock").touch()
    (socks / "b" / "b.sock").touch()
    (etc / "c.spec").write_text("tcp://127.0.0.1:9000\n")
    (lib / "d.json").write_text(
        '{"Name": "d", "Addr": "https://h:9443", "TLSConfig": {"CAFile": "/ca.pem"}}'
    )
    assert find_plugin("a", **dirs).unix == str(socks / "a.sock")  # type: ignore[arg-type]
    assert find_plugin("b", **dirs).unix == str(socks / "b" / "b.sock")  # type: ignore[arg-type]
    c = find_plugin("c", **dirs)
    assert (c.host, c.port, c.tls) == ("127.0.0.1", 9000, False)
    d = find_plugin("d", **dirs)
    assert (d.host, d.port, d.tls, d.tls_ca) == ("h", 9443, True, "/ca.pem")
    with pytest.raises(FileNotFoundError, match="no plugin 'e'"):
        find_plugin("e", **dirs)


@pytest.mark.parametrize(
    ("short", "full"),
    [
        ("list", "VolumeDriver.List"),
        ("caps", "VolumeDriver.Capabilities"),
        ("Mount", "VolumeDriver.Mount"),
        ("activate", "Plugin.Activate"),
        ("/VolumeDriver.Get", "VolumeDriver.Get"),
        ("volumedriver.remove", "VolumeDriver.Remove"),
        ("Dockvol.Status", "Dockvol.Status"),
    ],
)
def test_short_endpoint_names(short: str, full: str) -> None:
    assert resolve_endpoint(short) == full


def test_unknown_short_endpoint_name_is_refused_with_the_choices() -> None:
    with pytest.raises(ValueError, match=r"unknown endpoint 'lst'.*list"):
        resolve_endpoint("lst")


def test_addresses() -> None:
    assert Address.parse("unix:///run/x.sock").unix == "/run/x.sock"
    assert Address.parse("/run/x.sock").unix == "/run/x.sock"
    a = Address.parse("https://h:9000", tls_ca="ca.pem")
    assert (a.host, a.port, a.tls, a.tls_ca) == ("h", 9000, True, "ca.pem")
    assert not Address.parse("tcp://h:1").tls
    with pytest.raises(ValueError, match="unsupported"):
        Address.parse("ftp://h:1")


@pytest.mark.parametrize(
    "text",
    [
        "2026-11-28T11:00:00Z",
        "2026-11-28T11:00:00.123456789Z",
        "2026-11-28T11:00:00+01:00",
        "2024-02-29T23:59:59-07:30",
    ],
)
def test_rfc3339_the_engine_accepts(text: str) -> None:
    parse_rfc3339(text)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "2026-11-28",
        "2026-11-28 11:00:00Z",
        "2026-11-28T11:00:00",  # no time zone
        "2026-11-28t11:00:00z",
        "2026-11-28T1:00:00Z",
        "2026-02-30T11:00:00Z",
        "2026-11-28T24:00:00Z",
        "2026-11-28T11:00:60Z",
        "2026-11-28T11:00:00,5Z",
        "2026-11-28T11:00:00+0100",
        "1732791600",
    ],
)
def test_rfc3339_the_engine_rejects(text: str) -> None:
    with pytest.raises(GoDecodeError):
        parse_rfc3339(text)


def test_decode_matches_keys_case_insensitively_last_wins() -> None:
    obj = {"volume": {"name": "a", "NAME": "b"}, "err": ""}
    out = decode(obj, REPLIES["VolumeDriver.Get"], "")
    assert out == {"Volume": {"Name": "b"}, "Err": ""}
    assert field({"ERR": "x"}, "Err") == "x"


def test_decode_rejects_what_breaks_the_engines_get() -> None:
    spec = REPLIES["VolumeDriver.Get"]
    with pytest.raises(GoDecodeError, match="CreatedAt"):
        decode({"Volume": {"Name": "a", "CreatedAt": ""}}, spec, "")
    with pytest.raises(GoDecodeError, match="Status"):
        decode({"Volume": {"Name": "a", "Status": "ok"}}, spec, "")
    with pytest.raises(GoDecodeError, match="Name"):
        decode({"Volume": {"Name": 1}}, spec, "")
    # null is Go's zero value, never an error; unknown keys are ignored
    assert decode({"Volume": {"Name": "a", "CreatedAt": None, "Status": None, "X": 1}}, spec, "")
    # the kit's checks can look at one field at a time
    assert decode({"Volume": {"Name": "a", "CreatedAt": ""}}, spec, "", strict=())


def test_docs_per_check_sections_are_rendered_from_the_checks_metadata() -> None:
    from dockvol.testing import SUITE
    from dockvol.testing.docs import COMMAND, updated

    page = (Path(__file__).parents[2] / "docs" / "conformance.md").read_text()
    assert updated(page, SUITE) == page, f"docs/conformance.md is not current: run {COMMAND}"
    for chk in SUITE:
        assert chk.checks and chk.why and chk.engine and chk.fix, chk.name
        assert f"\n### {chk.name}\n" in page


def test_the_suite_lists_every_check_explicitly() -> None:
    """Checks are plain objects listed in catalog.py: one defined but not listed is a bug."""
    from dockvol.testing import SUITE, checks, faults, names
    from dockvol.testing.verdict import Check

    defined = {
        id(v): v.name
        for mod in (checks, faults, names)
        for v in vars(mod).values()
        if isinstance(v, Check)
    }
    assert set(defined) == {id(c) for c in SUITE}, sorted(defined.values())
