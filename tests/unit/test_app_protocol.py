"""The ASGI app against Docker's framing and the protocol's rules, in-process (no sockets).

Requests are shaped as the engine sends them (PROTOCOL.md §1): no Content-Type, an empty Host,
a trailing newline, empty bodies for Activate and retries. A fake driver records what the
framework asks of it, so reference counting and idempotency are checked at the driver boundary.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any, ClassVar

import httpx
import msgspec
import pytest

from dockvol import Driver, DriverError, Option, Volume
from dockvol._registry.memory import MemoryRegistry
from dockvol._service.service import VolumeService
from dockvol._wire.app import MAX_BODY, PluginApp

ID1, ID2 = "1" * 64, "2" * 64


class FakeDriver(Driver):
    options: ClassVar[Mapping[str, Option]] = {
        "size": Option.size(help="bytes"),
        "mode": Option.mode(),
        "label": Option.string(),
        "token": Option.secret_ref(),
        "fail": Option.choice("no", "driver", "crash", default="no"),
    }

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.calls: list[tuple[str, str]] = []
        #: Set to make mount() block until released (concurrency tests).
        self.mount_entered = threading.Event()
        self.mount_release: threading.Event | None = None

    def create(self, volume: Volume) -> None:
        self.calls.append(("create", volume.name))

    def remove(self, volume: Volume) -> None:
        self.calls.append(("remove", volume.name))

    def mount(self, volume: Volume) -> Path:
        self.calls.append(("mount", volume.name))
        fail = volume.options["fail"]
        if fail == "driver":
            raise DriverError("the backend is offline; start it and retry")
        if fail == "crash":
            raise RuntimeError("boom")
        if self.mount_release is not None and volume.name.startswith("slow"):
            self.mount_entered.set()
            assert self.mount_release.wait(30), "test never released the mount"
        return self.root / volume.key

    def unmount(self, volume: Volume) -> None:
        self.calls.append(("unmount", volume.name))

    def count(self, what: str, name: str) -> int:
        return self.calls.count((what, name))


class GlobalDriver(FakeDriver):
    scope = "global"


Reply = tuple[int, dict[str, str], bytes]


async def asgi(
    app: PluginApp,
    path: str,
    body: bytes | list[bytes] = b"",
    *,
    method: str = "POST",
    headers: list[tuple[bytes, bytes]] | None = None,
) -> Reply:
    """One raw ASGI request; ``body`` as a list is sent in several chunks."""
    chunks = body if isinstance(body, list) else [body]
    if headers is None:  # the engine's headers: no Content-Type, empty Host
        size = sum(len(c) for c in chunks)
        headers = [
            (b"host", b""),
            (b"user-agent", b"Go-http-client/1.1"),
            (b"accept", b"application/vnd.docker.plugins.v1.2+json"),
            (b"content-length", str(size).encode()),
            (b"accept-encoding", b"gzip"),
        ]
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": headers,
        "server": None,
        "client": None,
    }
    pending = list(chunks)

    async def receive() -> dict[str, Any]:
        chunk = pending.pop(0) if pending else b""
        return {"type": "http.request", "body": chunk, "more_body": bool(pending)}

    sent: list[dict[str, Any]] = []

    async def send(msg: dict[str, Any]) -> None:
        sent.append(msg)

    await app(scope, receive, send)
    start = [m for m in sent if m["type"] == "http.response.start"]
    assert len(start) == 1, sent
    out = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    hdrs = {k.decode().lower(): v.decode() for k, v in start[0].get("headers", [])}
    return start[0]["status"], hdrs, out


class Plugin:
    """The app with a fake driver and an in-memory registry; ``call`` is one engine request."""

    def __init__(self, tmp: Path, driver_cls: type[FakeDriver] = FakeDriver) -> None:
        self.driver = driver_cls(tmp / "root")
        self.registry = MemoryRegistry()
        self.service = VolumeService(self.driver, self.registry, max_workers=4)
        self.app = PluginApp(self.service)

    def raw(self, path: str, body: bytes | list[bytes] = b"", **kw: Any) -> Reply:
        return asyncio.run(asgi(self.app, path, body, **kw))

    def call(self, endpoint: str, body: Any = None) -> dict[str, Any]:
        raw = b"" if body is None else json.dumps(body).encode() + b"\n"  # Go's encoder
        status, _, out = self.raw("/" + endpoint, raw)
        assert status == 200, (status, out)
        reply = json.loads(out)
        assert isinstance(reply, dict), out
        return reply


@pytest.fixture
def plugin(tmp_path: Path) -> Iterator[Plugin]:
    p = Plugin(tmp_path)
    yield p
    p.service.close()


def ok(reply: dict[str, Any]) -> dict[str, Any]:
    assert "Err" not in reply, reply
    return reply


# -- framing -------------------------------------------------------------------------------------
def test_engine_framing_is_accepted(plugin: Plugin) -> None:
    status, headers, body = plugin.raw(
        "/VolumeDriver.Create", b'{"Name":"v","Opts":{"label":"x"}}\n'
    )
    assert (status, body) == (200, b"{}")
    assert headers["content-type"] == "application/vnd.docker.plugins.v1+json"
    assert plugin.driver.count("create", "v") == 1


def test_no_headers_at_all_is_accepted(plugin: Plugin) -> None:
    status, _, body = plugin.raw("/VolumeDriver.Capabilities", b"{}\n", headers=[])
    assert status == 200 and json.loads(body) == {"Capabilities": {"Scope": "local"}}


def test_chunked_body_is_reassembled(plugin: Plugin) -> None:
    status, _, body = plugin.raw(
        "/VolumeDriver.Create",
        [b'{"Na', b'me":"v",', b'"Opts":null}', b"\n"],
        headers=[(b"transfer-encoding", b"chunked")],
    )
    assert (status, body) == (200, b"{}")


@pytest.mark.parametrize("body", [b"", b"\n", b"  \r\n\t ", b"null\n"], ids=repr)
def test_empty_and_whitespace_bodies(plugin: Plugin, body: bytes) -> None:
    # Activate has an empty body; a retry after a transport error can have one too.
    for endpoint, expected in (
        ("/Plugin.Activate", {"Implements": ["VolumeDriver"]}),
        ("/VolumeDriver.Capabilities", {"Capabilities": {"Scope": "local"}}),
        ("/VolumeDriver.List", {"Volumes": []}),
    ):
        status, _, out = plugin.raw(endpoint, body)
        assert status == 200 and json.loads(out) == expected, (endpoint, out)
    # Where a name is needed, an empty body gets a JSON error that says what is missing.
    for endpoint in ("Create", "Get", "Remove", "Mount", "Unmount", "Path"):
        status, _, out = plugin.raw(f"/VolumeDriver.{endpoint}", body)
        assert status == 200
        assert '"Name"' in json.loads(out)["Err"], (endpoint, out)


@pytest.mark.parametrize("opts", [None, {}], ids=["null", "empty"])
def test_opts_null_or_empty_create_a_volume(plugin: Plugin, opts: Any) -> None:
    assert plugin.call("VolumeDriver.Create", {"Name": "v", "Opts": opts}) == {}
    assert ok(plugin.call("VolumeDriver.Get", {"Name": "v"}))["Volume"]["Status"]["options"] == {}


def test_opts_missing_creates_a_volume(plugin: Plugin) -> None:
    assert plugin.call("VolumeDriver.Create", {"Name": "v"}) == {}


def test_keys_are_matched_case_insensitively(plugin: Plugin) -> None:
    assert plugin.call("VolumeDriver.Create", {"name": "v", "opts": {"mode": "0700"}}) == {}
    vol = ok(plugin.call("VolumeDriver.Get", {"NAME": "v"}))["Volume"]
    assert vol["Name"] == "v" and vol["Status"]["options"] == {"mode": "0700"}
    mp = ok(plugin.call("VolumeDriver.Mount", {"name": "v", "id": ID1}))["Mountpoint"]
    assert ok(plugin.call("VolumeDriver.Get", {"Name": "v"}))["Volume"]["Mountpoint"] == mp
    assert plugin.call("VolumeDriver.Unmount", {"nAmE": "v", "Id": ID1}) == {}
    assert plugin.driver.count("unmount", "v") == 1


def test_unknown_keys_are_ignored(plugin: Plugin) -> None:
    assert plugin.call("VolumeDriver.Create", {"Name": "v", "Opts": {}, "Labels": {"a": "b"}}) == {}


# -- every reply is a JSON object with status 200 ------------------------------------------------
ENDPOINTS = [
    "/Plugin.Activate",
    "/VolumeDriver.Capabilities",
    "/VolumeDriver.Create",
    "/VolumeDriver.Remove",
    "/VolumeDriver.Mount",
    "/VolumeDriver.Unmount",
    "/VolumeDriver.Path",
    "/VolumeDriver.Get",
    "/VolumeDriver.List",
    "/VolumeDriver.Nope",
    "/",
    "/Plugin.Activate/extra",
]
BODIES = [
    b"",
    b"{}\n",
    b'{"Name":"v"}\n',
    b'{"Name":"v","ID":"' + ID1.encode() + b'"}\n',
    b'{"Name":42,"ID":[],"Opts":"x"}',
    b'{"Name":"v","Opts":{"size":1}}',
    b"{not json",
    b"[1,2]",
    b'"just a string"',
    b"\xff\xfe\x00",
    b'{"Name":"v"}{"Name":"w"}',
]


@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_every_reply_is_a_json_object_with_status_200(plugin: Plugin, endpoint: str) -> None:
    for body in BODIES:
        status, _, out = plugin.raw(endpoint, body)
        assert status == 200, (endpoint, body, status)
        reply = json.loads(out)
        assert isinstance(reply, dict), (endpoint, body, out)
        assert "Traceback" not in out.decode(), out
        if "Err" in reply:
            assert isinstance(reply["Err"], str) and reply["Err"], reply


def test_unknown_endpoint_gets_err(plugin: Plugin) -> None:
    status, _, out = plugin.raw("/VolumeDriver.Frobnicate", b"{}\n")
    assert status == 200
    err = json.loads(out)["Err"]
    assert "unknown endpoint" in err and "/VolumeDriver.Frobnicate" in err


def test_wrong_method_gets_err(plugin: Plugin) -> None:
    status, _, out = plugin.raw("/VolumeDriver.List", b"", method="GET")
    assert status == 200 and "POST" in json.loads(out)["Err"]


@pytest.mark.parametrize(
    ("body", "says"),
    [
        (b'{"Name": "v",', "not valid JSON"),
        (b"[]", "must be a JSON object"),
        (b'{"Name": "v", "Opts": {"size": 5}}', '"Opts" must be an object of string values'),
        (b'{"Name": 5}', '"Name"'),
    ],
)
def test_malformed_requests_get_err(plugin: Plugin, body: bytes, says: str) -> None:
    status, _, out = plugin.raw("/VolumeDriver.Create", body)
    assert status == 200
    assert says in json.loads(out)["Err"]
    assert plugin.driver.calls == []


@pytest.mark.parametrize(
    "body", [b"[" * 100_000, b'{"Name":' * 50_000], ids=["deep-array", "deep-object"]
)
def test_deeply_nested_json_is_a_client_error(
    plugin: Plugin, body: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    """Nesting deeper than the decoder allows is the sender's fault: say the body is not
    acceptable JSON, not "internal error in the plugin" with a traceback in its log."""
    status, _, out = plugin.raw("/VolumeDriver.Create", body)
    assert status == 200
    err = json.loads(out)["Err"]
    assert "JSON" in err and "internal error" not in err, err
    assert not [r for r in caplog.records if r.exc_info], "a client error logged a traceback"


def test_oversized_body_gets_413_with_json(plugin: Plugin) -> None:
    big = b'{"Name":"v","Opts":{"label":"' + b"x" * MAX_BODY + b'"}}\n'
    status, _, out = plugin.raw("/VolumeDriver.Create", big)
    assert status == 413
    assert "larger than" in json.loads(out)["Err"]
    assert plugin.driver.calls == []


def test_oversized_chunked_body_gets_413_without_content_length(plugin: Plugin) -> None:
    chunks = [b'{"Name":"v","Opts":{"label":"'] + [b"x" * 65536] * (MAX_BODY // 65536 + 1)
    status, _, out = plugin.raw(
        "/VolumeDriver.Create", [*chunks, b'"}}'], headers=[(b"transfer-encoding", b"chunked")]
    )
    assert status == 413 and "larger than" in json.loads(out)["Err"]
    assert plugin.registry.get("v") is None


def test_a_lying_content_length_is_not_trusted(plugin: Plugin) -> None:
    status, _, out = plugin.raw(
        "/VolumeDriver.Create",
        [b"x" * (MAX_BODY + 1)],
        headers=[(b"content-length", b"10")],
    )
    assert status == 413 and "Err" in json.loads(out)


# -- reply shapes --------------------------------------------------------------------------------
def test_activate_and_capabilities(plugin: Plugin, tmp_path: Path) -> None:
    assert plugin.call("Plugin.Activate") == {"Implements": ["VolumeDriver"]}
    assert plugin.call("VolumeDriver.Capabilities", {}) == {"Capabilities": {"Scope": "local"}}
    glob = Plugin(tmp_path / "g", GlobalDriver)
    assert glob.call("VolumeDriver.Capabilities", {}) == {"Capabilities": {"Scope": "global"}}
    glob.service.close()


def test_get_shape(plugin: Plugin) -> None:
    ok(plugin.call("VolumeDriver.Create", {"Name": "v", "Opts": {"size": "1G", "label": "a"}}))
    vol = ok(plugin.call("VolumeDriver.Get", {"Name": "v"}))["Volume"]
    assert set(vol) == {"Name", "CreatedAt", "Status"}  # no Mountpoint until mounted
    assert vol["Name"] == "v"
    created = datetime.fromisoformat(vol["CreatedAt"])
    assert created.tzinfo is not None
    assert vol["Status"] == {
        "mounts": 0,
        "mount_ids": [],
        "options": {"size": "1G", "label": "a"},
    }
    mp = ok(plugin.call("VolumeDriver.Mount", {"Name": "v", "ID": ID1}))["Mountpoint"]
    vol = ok(plugin.call("VolumeDriver.Get", {"Name": "v"}))["Volume"]
    assert vol["Mountpoint"] == mp
    assert vol["Status"]["mounts"] == 1 and vol["Status"]["mount_ids"] == [ID1]


def test_get_echoes_unusual_names_exactly(plugin: Plugin) -> None:
    for name in ("../../escape", "a/b c", "é ü 漢字", "UPPER", " lead", "x" * 255):
        ok(plugin.call("VolumeDriver.Create", {"Name": name}))
        assert ok(plugin.call("VolumeDriver.Get", {"Name": name}))["Volume"]["Name"] == name


def test_get_of_unknown_volume_is_err(plugin: Plugin) -> None:
    reply = plugin.call("VolumeDriver.Get", {"Name": "ghost"})
    assert "ghost" in reply["Err"] and "not found" in reply["Err"]
    assert reply.get("Volume") is None


def test_secret_options_are_references_in_get(plugin: Plugin) -> None:
    ok(plugin.call("VolumeDriver.Create", {"Name": "v", "Opts": {"token": "secret:db"}}))
    st = ok(plugin.call("VolumeDriver.Get", {"Name": "v"}))["Volume"]["Status"]
    assert st["options"] == {"token": "secret:db"}
    reply = plugin.call("VolumeDriver.Create", {"Name": "w", "Opts": {"token": "hunter2"}})
    assert "by reference" in reply["Err"] and "hunter2" not in reply["Err"]


def test_list_shape(plugin: Plugin) -> None:
    assert plugin.call("VolumeDriver.List", {}) == {"Volumes": []}
    ok(plugin.call("VolumeDriver.Create", {"Name": "a"}))
    ok(plugin.call("VolumeDriver.Create", {"Name": "b"}))
    mp = ok(plugin.call("VolumeDriver.Mount", {"Name": "b", "ID": ID1}))["Mountpoint"]
    vols = plugin.call("VolumeDriver.List", {})["Volumes"]
    assert sorted(vols, key=lambda v: v["Name"]) == [
        {"Name": "a"},
        {"Name": "b", "Mountpoint": mp},
    ]


def test_path_shape(plugin: Plugin) -> None:
    ok(plugin.call("VolumeDriver.Create", {"Name": "v"}))
    assert plugin.call("VolumeDriver.Path", {"Name": "v"}) == {"Mountpoint": ""}
    mp = ok(plugin.call("VolumeDriver.Mount", {"Name": "v", "ID": ID1}))["Mountpoint"]
    assert plugin.call("VolumeDriver.Path", {"Name": "v"}) == {"Mountpoint": mp}
    assert "not found" in plugin.call("VolumeDriver.Path", {"Name": "ghost"})["Err"]


class GoVolume(msgspec.Struct):
    Name: str
    Mountpoint: str = ""
    CreatedAt: str = ""
    Status: dict[str, Any] | None = None


class GoGet(msgspec.Struct):
    Volume: GoVolume | None = None
    Err: str = ""


class GoList(msgspec.Struct):
    Volumes: list[GoVolume]
    Err: str = ""


def test_replies_decode_with_the_engines_types(plugin: Plugin) -> None:
    """Types the engine's Go structs require: a type mismatch fails the whole call."""
    ok(plugin.call("VolumeDriver.Create", {"Name": "v", "Opts": {"mode": "755"}}))
    ok(plugin.call("VolumeDriver.Mount", {"Name": "v", "ID": ID1}))
    _, _, raw = plugin.raw("/VolumeDriver.Get", b'{"Name":"v"}\n')
    got = msgspec.json.decode(raw, type=GoGet)
    assert got.Volume is not None and got.Volume.CreatedAt != ""
    _, _, raw = plugin.raw("/VolumeDriver.List", b"{}\n")
    assert [v.Name for v in msgspec.json.decode(raw, type=GoList).Volumes] == ["v"]


# -- reference counts ----------------------------------------------------------------------------
def test_mount_twice_same_id_returns_same_path_and_mounts_once(plugin: Plugin) -> None:
    d = plugin.driver
    ok(plugin.call("VolumeDriver.Create", {"Name": "v"}))
    first = ok(plugin.call("VolumeDriver.Mount", {"Name": "v", "ID": ID1}))["Mountpoint"]
    again = ok(plugin.call("VolumeDriver.Mount", {"Name": "v", "ID": ID1}))["Mountpoint"]
    assert first == again
    assert d.count("mount", "v") == 1
    st = ok(plugin.call("VolumeDriver.Get", {"Name": "v"}))["Volume"]["Status"]
    assert st["mounts"] == 2 and st["mount_ids"] == [ID1]

    # The first Unmount only drops the count; the second is the last: the driver unmounts.
    assert plugin.call("VolumeDriver.Unmount", {"Name": "v", "ID": ID1}) == {}
    assert d.count("unmount", "v") == 0
    st = ok(plugin.call("VolumeDriver.Get", {"Name": "v"}))["Volume"]["Status"]
    assert st["mounts"] == 1 and st["mount_ids"] == [ID1]
    assert plugin.call("VolumeDriver.Unmount", {"Name": "v", "ID": ID1}) == {}
    assert d.count("unmount", "v") == 1
    st = ok(plugin.call("VolumeDriver.Get", {"Name": "v"}))["Volume"]["Status"]
    assert st["mounts"] == 0 and st["mount_ids"] == []


def test_driver_mounts_on_first_id_and_unmounts_after_last(plugin: Plugin) -> None:
    d = plugin.driver
    ok(plugin.call("VolumeDriver.Create", {"Name": "v"}))
    p1 = ok(plugin.call("VolumeDriver.Mount", {"Name": "v", "ID": ID1}))["Mountpoint"]
    p2 = ok(plugin.call("VolumeDriver.Mount", {"Name": "v", "ID": ID2}))["Mountpoint"]
    assert p1 == p2
    assert d.count("mount", "v") == 1
    assert plugin.call("VolumeDriver.Unmount", {"Name": "v", "ID": ID1}) == {}
    assert d.count("unmount", "v") == 0
    assert plugin.call("VolumeDriver.Unmount", {"Name": "v", "ID": ID2}) == {}
    assert d.count("unmount", "v") == 1
    # Mounting again after the last unmount is a new first reference.
    ok(plugin.call("VolumeDriver.Mount", {"Name": "v", "ID": ID1}))
    assert d.count("mount", "v") == 2


def test_unmount_of_unknown_id_or_volume_is_ok(plugin: Plugin) -> None:
    ok(plugin.call("VolumeDriver.Create", {"Name": "v"}))
    ok(plugin.call("VolumeDriver.Mount", {"Name": "v", "ID": ID1}))
    assert plugin.call("VolumeDriver.Unmount", {"Name": "v", "ID": ID2}) == {}
    assert plugin.call("VolumeDriver.Unmount", {"Name": "ghost", "ID": ID1}) == {}
    assert plugin.driver.count("unmount", "v") == 0
    st = ok(plugin.call("VolumeDriver.Get", {"Name": "v"}))["Volume"]["Status"]
    assert st["mount_ids"] == [ID1]


def test_mount_of_unknown_volume_is_err(plugin: Plugin) -> None:
    reply = plugin.call("VolumeDriver.Mount", {"Name": "ghost", "ID": ID1})
    assert "not found" in reply["Err"]


@pytest.mark.parametrize("mount_id", ["", "x" * 300, "a\nb"], ids=["empty", "long", "newline"])
def test_mount_with_bad_id_is_err(plugin: Plugin, mount_id: str) -> None:
    ok(plugin.call("VolumeDriver.Create", {"Name": "v"}))
    reply = plugin.call("VolumeDriver.Mount", {"Name": "v", "ID": mount_id})
    assert "mount ID" in reply["Err"]
    assert plugin.driver.count("mount", "v") == 0


def test_failed_mount_leaves_no_record(plugin: Plugin) -> None:
    ok(plugin.call("VolumeDriver.Create", {"Name": "v", "Opts": {"fail": "driver"}}))
    reply = plugin.call("VolumeDriver.Mount", {"Name": "v", "ID": ID1})
    assert reply["Err"] == "the backend is offline; start it and retry"
    st = ok(plugin.call("VolumeDriver.Get", {"Name": "v"}))["Volume"]["Status"]
    assert st["mounts"] == 0 and st["mount_ids"] == []
    assert plugin.call("VolumeDriver.Remove", {"Name": "v"}) == {}


def test_crashing_driver_gets_a_generic_err_and_the_traceback_goes_to_the_log(
    plugin: Plugin, caplog: pytest.LogCaptureFixture
) -> None:
    ok(plugin.call("VolumeDriver.Create", {"Name": "v", "Opts": {"fail": "crash"}}))
    err = plugin.call("VolumeDriver.Mount", {"Name": "v", "ID": ID1})["Err"]
    assert "mount volume 'v'" in err and "plugin log" in err
    # The exception's text may hold paths or values: only the log has it.
    assert "boom" not in err and "Traceback" not in err and "File " not in err
    assert "boom" in caplog.text and "Traceback" in caplog.text


def test_remove_refused_while_mounted_naming_ids(plugin: Plugin) -> None:
    ok(plugin.call("VolumeDriver.Create", {"Name": "v"}))
    ok(plugin.call("VolumeDriver.Mount", {"Name": "v", "ID": ID1}))
    ok(plugin.call("VolumeDriver.Mount", {"Name": "v", "ID": ID2}))
    err = plugin.call("VolumeDriver.Remove", {"Name": "v"})["Err"]
    assert "in use" in err and ID1[:12] in err and ID2[:12] in err
    assert plugin.driver.count("remove", "v") == 0

    plugin.call("VolumeDriver.Unmount", {"Name": "v", "ID": ID1})
    err = plugin.call("VolumeDriver.Remove", {"Name": "v"})["Err"]
    assert ID2[:12] in err and ID1[:12] not in err

    plugin.call("VolumeDriver.Unmount", {"Name": "v", "ID": ID2})
    assert plugin.call("VolumeDriver.Remove", {"Name": "v"}) == {}
    assert plugin.driver.count("remove", "v") == 1
    assert "not found" in plugin.call("VolumeDriver.Get", {"Name": "v"})["Err"]
    # A retried Remove of a volume already gone succeeds.
    assert plugin.call("VolumeDriver.Remove", {"Name": "v"}) == {}


# -- create ----------------------------------------------------------------------------------
def test_create_is_idempotent(plugin: Plugin) -> None:
    body = {"Name": "v", "Opts": {"mode": "0750", "size": "1G"}}
    assert plugin.call("VolumeDriver.Create", body) == {}
    assert plugin.call("VolumeDriver.Create", body) == {}
    # Same values written differently are the same options.
    same = {"Name": "v", "Opts": {"mode": "750", "size": "1024M"}}
    assert plugin.call("VolumeDriver.Create", same) == {}
    assert plugin.driver.count("create", "v") == 1


def test_create_with_different_options_is_a_clear_error(plugin: Plugin) -> None:
    ok(plugin.call("VolumeDriver.Create", {"Name": "v", "Opts": {"mode": "0750"}}))
    err = plugin.call("VolumeDriver.Create", {"Name": "v", "Opts": {"mode": "0700"}})["Err"]
    assert "already exists with different options" in err and "mode" in err
    err = plugin.call("VolumeDriver.Create", {"Name": "v", "Opts": None})["Err"]
    assert "different options" in err
    assert plugin.driver.count("create", "v") == 1
    st = ok(plugin.call("VolumeDriver.Get", {"Name": "v"}))["Volume"]["Status"]
    assert st["options"] == {"mode": "0750"}


def test_unknown_option_lists_valid_ones(plugin: Plugin) -> None:
    err = plugin.call("VolumeDriver.Create", {"Name": "v", "Opts": {"colour": "red"}})["Err"]
    assert "unknown option 'colour'" in err
    assert "valid options: fail, label, mode, size, token" in err
    assert plugin.driver.calls == [] and plugin.registry.get("v") is None


@pytest.mark.parametrize(
    ("opts", "says"),
    [
        ({"size": "lots"}, "option size: 'lots' is not a size"),
        ({"mode": "999"}, "option mode: '999' is not an octal mode"),
        ({"fail": "maybe"}, "choose one of: no, driver, crash"),
    ],
)
def test_bad_option_values_are_explained(plugin: Plugin, opts: dict[str, str], says: str) -> None:
    err = plugin.call("VolumeDriver.Create", {"Name": "v", "Opts": opts})["Err"]
    assert says in err and "'v'" in err
    assert plugin.driver.calls == []


@pytest.mark.parametrize(
    ("name", "says"),
    [("", "empty"), ("a\nb", "control characters"), ("x" * 256, "longer than 255 bytes")],
    ids=["empty", "newline", "long"],
)
def test_bad_names_are_explained(plugin: Plugin, name: str, says: str) -> None:
    err = plugin.call("VolumeDriver.Create", {"Name": name})["Err"]
    assert says in err
    assert plugin.driver.calls == []


# -- concurrency ---------------------------------------------------------------------------------
def test_slow_mount_does_not_block_reads_or_other_volumes(plugin: Plugin) -> None:
    d = plugin.driver
    d.mount_release = threading.Event()

    async def scenario() -> None:
        for name in ("slow", "fast"):
            await asgi(plugin.app, "/VolumeDriver.Create", json.dumps({"Name": name}).encode())
        body = json.dumps({"Name": "slow", "ID": ID1}).encode()
        slow = asyncio.create_task(asgi(plugin.app, "/VolumeDriver.Mount", body))
        loop = asyncio.get_running_loop()
        assert await loop.run_in_executor(None, d.mount_entered.wait, 30)
        for path, payload in (
            ("/VolumeDriver.Get", {"Name": "fast"}),
            ("/VolumeDriver.Get", {"Name": "slow"}),
            ("/VolumeDriver.List", {}),
            ("/VolumeDriver.Capabilities", {}),
            ("/VolumeDriver.Mount", {"Name": "fast", "ID": ID2}),
            ("/VolumeDriver.Unmount", {"Name": "fast", "ID": ID2}),
        ):
            status, _, out = await asyncio.wait_for(
                asgi(plugin.app, path, json.dumps(payload).encode()), 30
            )
            assert status == 200 and "Err" not in json.loads(out), (path, out)
            assert not slow.done(), f"{path} waited for the slow mount"
        assert d.mount_release is not None
        d.mount_release.set()
        status, _, out = await asyncio.wait_for(slow, 30)
        assert status == 200 and "Mountpoint" in json.loads(out)

    try:
        asyncio.run(scenario())
    finally:
        d.mount_release.set()


def test_mounts_of_one_volume_are_serialised(plugin: Plugin) -> None:
    """Concurrent first Mounts of one volume with different IDs: the driver mounts once."""
    ok(plugin.call("VolumeDriver.Create", {"Name": "v"}))

    async def scenario() -> list[Reply]:
        ids = [f"{i:064x}" for i in range(8)]
        return await asyncio.gather(
            *(
                asgi(plugin.app, "/VolumeDriver.Mount", json.dumps({"Name": "v", "ID": i}).encode())
                for i in ids
            )
        )

    replies = asyncio.run(scenario())
    paths = {json.loads(out)["Mountpoint"] for _, _, out in replies}
    assert len(paths) == 1
    assert plugin.driver.count("mount", "v") == 1
    st = ok(plugin.call("VolumeDriver.Get", {"Name": "v"}))["Volume"]["Status"]
    assert st["mounts"] == 8


# -- through a real ASGI client ------------------------------------------------------------------
def test_through_httpx_asgi_transport(plugin: Plugin) -> None:
    async def scenario() -> None:
        transport = httpx.ASGITransport(app=plugin.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://plugin") as client:
            r = await client.post("/VolumeDriver.Create", content=b'{"Name":"v","Opts":null}\n')
            assert (r.status_code, r.json()) == (200, {})
            assert "content-type" not in {k.lower() for k in r.request.headers}
            r = await client.post("/VolumeDriver.Get", content=b'{"Name":"v"}\n')
            assert r.status_code == 200 and r.json()["Volume"]["Name"] == "v"
            r = await client.post("/VolumeDriver.List", content=b"{}\n")
            assert r.json() == {"Volumes": [{"Name": "v"}]}
            r = await client.post("/Plugin.Activate")
            assert r.json() == {"Implements": ["VolumeDriver"]}
            r = await client.post("/nope", content=b"{}")
            assert r.status_code == 200 and "unknown endpoint" in r.json()["Err"]

    asyncio.run(scenario())
