"""The attack corpus against a real ``dockvol serve`` over its unix socket, as the engine talks.

Names that try to leave --root, look-alike names, NUL bytes, huge strings, option injection,
symlink swaps of a volume's directory between calls, oversized requests, and floods of slow and
idle connections while Get must keep answering.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import unicodedata
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.security.corpus import ATTACK_NAMES, ATTACK_OPTION_VALUES
from tests.support.plugin import Plugin, call

ID1, ID2 = "1" * 64, "2" * 64
PWNED = Path("/tmp/dv-pwned")
ESCAPE = Path("/tmp/dv-escape")


def _refusable(name: str) -> bool:
    """Names the framework refuses: empty, control characters, over 255 bytes, not unicode."""
    return (
        any(unicodedata.category(c) in ("Cc", "Cs") for c in name)
        or len(name.encode("utf-8", "surrogatepass")) > 255
    )


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("atk")


@pytest.fixture(scope="module")
def plugin(base: Path) -> Iterator[Plugin]:
    p = Plugin.start(base / "p.sock", base / "root", base / "state", "--log-level", "warning")
    try:
        yield p
    finally:
        assert p.stop() == 0


@pytest.fixture(autouse=True)
def no_escape() -> Iterator[None]:
    for f in (PWNED, ESCAPE):
        assert not f.exists(), f"{f} exists before the test: remove it"
    yield
    for f in (PWNED, ESCAPE):
        assert not f.exists(), f"{f} was created: an attack got through"


def req(plugin: Plugin, endpoint: str, **body: Any) -> dict[str, Any]:
    status, reply = call(plugin.sock, endpoint, body)
    assert status == 200, (status, reply)
    assert isinstance(reply, dict)
    return reply


def mountpoint_ok(plugin: Plugin, mp: str) -> Path:
    path = Path(mp)
    root = plugin.root.resolve()
    assert path.resolve().parent == root, mp
    assert path.is_dir() and not path.is_symlink()
    return path


@pytest.mark.parametrize("name", ATTACK_NAMES, ids=[ascii(n)[:30] for n in ATTACK_NAMES])
def test_attack_names_stay_inside_root(plugin: Plugin, name: str) -> None:
    created = req(plugin, "VolumeDriver.Create", Name=name, Opts=None)
    if _refusable(name):
        assert created.get("Err")
        assert name not in [v["Name"] for v in req(plugin, "VolumeDriver.List")["Volumes"]]
        return
    assert created == {}, created
    got = req(plugin, "VolumeDriver.Get", Name=name)
    assert got["Volume"]["Name"] == name  # echoed exactly
    mp = mountpoint_ok(plugin, req(plugin, "VolumeDriver.Mount", Name=name, ID=ID1)["Mountpoint"])
    (mp / "data").write_text(name, encoding="utf-8", errors="surrogatepass")
    assert req(plugin, "VolumeDriver.Unmount", Name=name, ID=ID1) == {}
    assert req(plugin, "VolumeDriver.Remove", Name=name) == {}
    assert not mp.exists()
    assert "Err" in req(plugin, "VolumeDriver.Get", Name=name)


def test_lookalike_names_are_distinct_volumes(plugin: Plugin) -> None:
    group = ["vol", "v\u043el", "\uff56\uff4f\uff4c", "caf\u00e9", "cafe\u0301", "a b", "a_b"]
    paths = {}
    for name in group:
        assert req(plugin, "VolumeDriver.Create", Name=name, Opts={}) == {}
        mp = req(plugin, "VolumeDriver.Mount", Name=name, ID=ID1)["Mountpoint"]
        paths[name] = mountpoint_ok(plugin, mp)
        (paths[name] / "owner").write_text(name)
    assert len(set(paths.values())) == len(group)
    for name, path in paths.items():
        assert (path / "owner").read_text() == name
        req(plugin, "VolumeDriver.Unmount", Name=name, ID=ID1)
        assert req(plugin, "VolumeDriver.Remove", Name=name) == {}


@pytest.mark.parametrize(
    "value", ATTACK_OPTION_VALUES, ids=[ascii(v)[:24] for v in ATTACK_OPTION_VALUES]
)
@pytest.mark.parametrize("key", ["uid", "gid", "mode", "on_remove"])
def test_option_injection_is_refused(plugin: Plugin, key: str, value: str) -> None:
    name = f"inj-{key}"
    reply = req(plugin, "VolumeDriver.Create", Name=name, Opts={key: value})
    assert "Err" in reply, reply  # 0o7777 too: set-id bits are refused on a volume directory
    assert "Traceback" not in reply["Err"]
    assert "Err" in req(plugin, "VolumeDriver.Get", Name=name)


def test_option_keys_injection_and_floods_are_refused(plugin: Plugin) -> None:
    for opts in (
        {"uid=0,mode": "1"},
        {"uid\n": "0"},
        {"": "x"},
        {"uid": "0", "UID": "1"},  # keys are exact: the upper-case one is unknown
        {f"k{i}": "v" for i in range(1000)},
    ):
        reply = req(plugin, "VolumeDriver.Create", Name="keyinj", Opts=opts)
        assert "Err" in reply, opts
    for opts_value in ([1, 2], "uid=0", {"uid": 0}, {"uid": None}):
        reply = req(plugin, "VolumeDriver.Create", Name="keyinj", Opts=opts_value)
        assert "Err" in reply, opts_value
    assert "Err" in req(plugin, "VolumeDriver.Get", Name="keyinj")


def test_symlink_swap_of_volume_dir_between_calls(plugin: Plugin, base: Path) -> None:
    outside = base / "outside"
    outside.mkdir()
    (outside / "precious").write_text("keep")
    assert req(plugin, "VolumeDriver.Create", Name="swap", Opts={}) == {}
    mp = mountpoint_ok(plugin, req(plugin, "VolumeDriver.Mount", Name="swap", ID=ID1)["Mountpoint"])
    assert req(plugin, "VolumeDriver.Unmount", Name="swap", ID=ID1) == {}

    # Between calls, the volume's directory is replaced by a symlink pointing out of --root.
    os.rename(mp, base / "moved-away")
    mp.symlink_to(outside)
    reply = req(plugin, "VolumeDriver.Mount", Name="swap", ID=ID2)
    assert "Err" in reply and "replaced" in reply["Err"], reply
    reply = req(plugin, "VolumeDriver.Remove", Name="swap")
    assert "Err" in reply, reply  # refuses to delete through the link
    assert (outside / "precious").read_text() == "keep"
    got = req(plugin, "VolumeDriver.Get", Name="swap")  # still known: the engine keeps it
    assert got["Volume"]["Name"] == "swap"

    # Put the real directory back: the volume works again and is removed normally.
    mp.unlink()
    os.rename(base / "moved-away", mp)
    mountpoint_ok(plugin, req(plugin, "VolumeDriver.Mount", Name="swap", ID=ID2)["Mountpoint"])
    assert req(plugin, "VolumeDriver.Unmount", Name="swap", ID=ID2) == {}
    assert req(plugin, "VolumeDriver.Remove", Name="swap") == {}
    assert (outside / "precious").read_text() == "keep"


def test_symlink_swap_while_mounted_then_remove(plugin: Plugin, base: Path) -> None:
    outside = base / "outside2"
    outside.mkdir()
    (outside / "precious").write_text("keep")
    assert req(plugin, "VolumeDriver.Create", Name="swap2", Opts={}) == {}
    mp = mountpoint_ok(
        plugin, req(plugin, "VolumeDriver.Mount", Name="swap2", ID=ID1)["Mountpoint"]
    )
    os.rename(mp, base / "moved-away2")
    mp.symlink_to(outside)
    assert req(plugin, "VolumeDriver.Unmount", Name="swap2", ID=ID1) == {}
    assert "Err" in req(plugin, "VolumeDriver.Remove", Name="swap2")
    assert (outside / "precious").read_text() == "keep"
    mp.unlink()
    os.rename(base / "moved-away2", mp)
    assert req(plugin, "VolumeDriver.Remove", Name="swap2") == {}


def test_huge_strings_are_bounded(plugin: Plugin) -> None:
    reply = req(plugin, "VolumeDriver.Create", Name="n" * 100_000, Opts={})
    assert "Err" in reply and "255 bytes" in reply["Err"]
    reply = req(plugin, "VolumeDriver.Mount", Name="x", ID="i" * 100_000)
    assert "Err" in reply
    status, reply = call(
        plugin.sock, "VolumeDriver.Create", raw=b'{"Name": "' + b"x" * (2 << 20) + b'"}'
    )
    assert status == 413 and "larger than" in reply["Err"]


def _raw_exchange(sock: Path, data: bytes) -> tuple[bytes, Any]:
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(10)
    s.connect(str(sock))
    out = b""
    try:
        # The server may answer early and close: read what it said anyway.
        with contextlib.suppress(ConnectionResetError, BrokenPipeError):
            s.sendall(data)
        while not _complete(out):  # one response; the server may keep the connection
            chunk = s.recv(65536)
            if not chunk:
                break
            out += chunk
    except (ConnectionResetError, BrokenPipeError):
        pass
    finally:
        s.close()
    head, _, body = out.partition(b"\r\n\r\n")
    return head.split(b"\r\n")[0], json.loads(body)


def _complete(data: bytes) -> bool:
    head, sep, body = data.partition(b"\r\n\r\n")
    if not sep:
        return False
    for line in head.split(b"\r\n")[1:]:
        k, _, v = line.partition(b":")
        if k.strip().lower() == b"content-length":
            return len(body) >= int(v)
    return False


def test_oversized_chunked_body_and_head_get_json_errors(plugin: Plugin) -> None:
    chunk = b"x" * 65536
    body = b"".join(b"%x\r\n%s\r\n" % (len(chunk), chunk) for _ in range(20)) + b"0\r\n\r\n"
    line, reply = _raw_exchange(
        plugin.sock,
        b"POST /VolumeDriver.Create HTTP/1.1\r\nHost: \r\nTransfer-Encoding: chunked\r\n\r\n"
        + body,
    )
    assert line.split()[1] == b"413" and "larger than" in reply["Err"]
    line, reply = _raw_exchange(
        plugin.sock,
        b"POST /VolumeDriver.Get HTTP/1.1\r\nX-Big: " + b"a" * 100_000 + b"\r\n\r\n",
    )
    assert line.split()[1] in (b"400", b"431") and reply["Err"]


def test_get_answers_through_a_flood_of_slow_and_idle_connections(plugin: Plugin) -> None:
    assert req(plugin, "VolumeDriver.Create", Name="steady", Opts={}) == {}
    held: list[socket.socket] = []
    try:
        for i in range(900):  # beyond the 512-connection cap
            s = socket.socket(socket.AF_UNIX)
            s.connect(str(plugin.sock))
            if i % 3 == 0:  # idle keep-alive, after one real request
                s.sendall(
                    b"POST /VolumeDriver.List HTTP/1.1\r\nHost: \r\nContent-Length: 3\r\n\r\n{}\n"
                )
            else:  # slowloris: a request that never finishes
                s.sendall(b"POST /VolumeDriver.Get HTTP/1.1\r\nHost: \r\nContent-Le")
            held.append(s)
            if i % 100 == 99:
                status, reply = call(
                    plugin.sock, "VolumeDriver.Get", {"Name": "steady"}, timeout=10
                )
                assert status == 200 and reply["Volume"]["Name"] == "steady"
        for _ in range(20):
            status, reply = call(plugin.sock, "VolumeDriver.Get", {"Name": "steady"}, timeout=10)
            assert status == 200 and reply["Volume"]["Name"] == "steady"
    finally:
        for s in held:
            s.close()
    assert plugin.proc is not None and plugin.proc.poll() is None
    assert req(plugin, "VolumeDriver.Remove", Name="steady") == {}


def test_block_driver_mount_and_mkfs_option_injection_is_refused(tmp_path: Path) -> None:
    p = Plugin.start(
        tmp_path / "b.sock", tmp_path / "root", tmp_path / "state", "--driver", "block",
        "--log-level", "warning",
    )  # fmt: skip
    try:
        for opts in (
            {"mountopts": "rw,suid,dev,exec"},
            {"mountopts": "defaults,x-mount.mkdir"},
            {"mountopts": "noatime,context=system_u:object_r:shadow_t:s0"},
            {"mountopts": "--bind=/"},
            {"mountopts": "remount"},
            {"mkfsopts": "label=$(touch /tmp/dv-pwned)x,inode_size=;touch /tmp/dv-pwned"},
            {"mkfsopts": "-O ^has_journal"},
            {"mkfsopts": "reserved=0\n-E root_owner=0:0"},
            {"size": "1G; touch /tmp/dv-pwned"},
            {"fs": "ext4 -F /dev/sda"},
        ):
            reply = p.call("VolumeDriver.Create", {"Name": "blk", "Opts": opts})[1]
            assert "Err" in reply, opts
        assert not list((tmp_path / "root").glob("images/*"))
    finally:
        assert p.stop() == 0
