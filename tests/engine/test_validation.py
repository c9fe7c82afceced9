"""Bad names and bad options are refused with clear errors, and nothing lands outside --root."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.engine import Engine
from tests.support.plugin import Plugin

from ._util import inspect, tree, volume_names

pytestmark = pytest.mark.engine


@pytest.fixture
def outside_root_unchanged(plugin: Plugin) -> Iterator[Path]:
    """Asserts that nothing changed in the directory holding --root, except inside --root for
    volumes that were really created (checked by each test)."""
    parent = plugin.root.parent
    before = tree(parent)
    yield parent
    after = tree(parent)
    outside = {(p, k) for p, k in after ^ before if not (parent / p).is_relative_to(plugin.root)}
    assert not outside, f"changed outside --root: {sorted(outside)}"


BAD_NAMES = {
    "newline": "bad\nname",
    "tab": "bad\tname",
    "too-long": "x" * 256,
    "too-long-utf8": "é" * 128,  # 256 bytes
}


@pytest.mark.parametrize("name", list(BAD_NAMES.values()), ids=list(BAD_NAMES))
def test_bad_names_are_refused_through_the_cli(
    engine: Engine, plugin: Plugin, name: str, outside_root_unchanged: Path
) -> None:
    root_before = tree(plugin.root)
    r = engine.docker("volume", "create", "-d", "dockvol", name, check=False)
    assert r.returncode != 0, f"volume {name!r} was created"
    assert "volume name" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr
    assert tree(plugin.root) == root_before
    code, reply = plugin.call("VolumeDriver.Get", {"Name": name})
    assert code == 200 and reply.get("Err"), reply


@pytest.mark.parametrize(
    ("name", "why"),
    [("", "empty"), ("a\0b", "control characters"), ("x" * 300, "longer than 255 bytes")],
    ids=["empty", "nul", "too-long"],
)
def test_bad_names_are_refused_on_the_socket(
    plugin: Plugin, name: str, why: str, outside_root_unchanged: Path
) -> None:
    # The CLI turns an empty name into a random one, so the socket is the way to send it.
    root_before = tree(plugin.root)
    code, reply = plugin.call("VolumeDriver.Create", {"Name": name, "Opts": {}})
    assert code == 200
    assert why in reply.get("Err", ""), reply
    assert tree(plugin.root) == root_before


BAD_OPTIONS = [
    (
        ["-o", "colour=blue"],
        ["unknown option 'colour'", "valid options: gid, mode, on_remove, uid"],
    ),
    (["-o", "mode=999"], ["mode", "'999' is not an octal mode"]),
    (["-o", "uid=abc"], ["uid", "'abc' is not a numeric id"]),
    (["-o", "gid=-1"], ["gid", "not a numeric id"]),
    (["-o", "on_remove=keep"], ["on_remove", "choose one of: delete, retain"]),
    (["-o", "mode=4777"], ["mode", "sets the setuid or setgid bit"]),
]


@pytest.mark.parametrize(
    ("opts", "expected"),
    BAD_OPTIONS,
    ids=["unknown", "mode", "uid", "gid", "on_remove", "setuid"],
)
def test_bad_options_are_refused_with_clear_errors(
    engine: Engine,
    plugin: Plugin,
    names,
    opts: list[str],
    expected: list[str],
    outside_root_unchanged: Path,
) -> None:
    vol = names("v")
    root_before = tree(plugin.root)
    r = engine.docker("volume", "create", "-d", "dockvol", *opts, vol, check=False)
    assert r.returncode != 0
    for text in expected:
        assert text in r.stderr, r.stderr
    assert "Traceback" not in r.stderr
    assert vol not in volume_names(engine)
    assert tree(plugin.root) == root_before


@pytest.mark.parametrize("name", ["../../escape", "/abs/../../x", "..", ".", "a/b c/é"])
def test_path_like_names_stay_inside_root(
    engine: Engine, plugin: Plugin, name: str, outside_root_unchanged: Path
) -> None:
    root = plugin.root
    engine.docker("volume", "create", "-d", "dockvol", name)
    mid = "e" * 64
    try:
        assert name in volume_names(engine)
        code, reply = plugin.call("VolumeDriver.Get", {"Name": name})
        assert reply["Volume"]["Name"] == name  # echoed exactly
        # The docker CLI cleans relative paths in --mount sources, so containers cannot name
        # most of these volumes; Mount them on the socket as the engine would.
        code, reply = plugin.call("VolumeDriver.Mount", {"Name": name, "ID": mid})
        assert code == 200 and "Err" not in reply, reply
        vdir = Path(reply["Mountpoint"])
        assert vdir.parent == root, vdir
        assert os.path.realpath(vdir) == str(vdir)
        (vdir / "marker").write_text("inside\n")
        assert [p.parent for p in root.rglob("marker")] == [vdir]
        assert plugin.call("VolumeDriver.Unmount", {"Name": name, "ID": mid}) == (200, {})
    finally:
        plugin.call("VolumeDriver.Unmount", {"Name": name, "ID": mid})
        # The engine's API cannot address names with dot segments (its router cleans the URL
        # path: "page not found"), so remove those on the socket.
        if engine.docker("volume", "rm", name, check=False).returncode != 0:
            assert plugin.call("VolumeDriver.Remove", {"Name": name}) == (200, {})
    assert name not in volume_names(engine)
    assert not vdir.exists()


def test_a_container_uses_a_name_with_slashes_and_spaces(
    engine: Engine, plugin: Plugin, outside_root_unchanged: Path
) -> None:
    name = "a/b c/é"
    engine.docker("volume", "create", "-d", "dockvol", name)
    try:
        assert inspect(engine, name)["Name"] == name
        engine.docker(
            "run", "--rm", "--network", "none", "--mount", f"type=volume,src={name},dst=/data",
            "busybox:local", "sh", "-c", "echo inside > /data/marker",
        )  # fmt: skip
        (marker,) = root_markers = list(plugin.root.rglob("marker"))
        assert marker.parent.parent == plugin.root, root_markers
        assert marker.read_text() == "inside\n"
    finally:
        engine.docker("volume", "rm", name, check=False)
    assert not marker.exists()


def test_remove_does_not_follow_symlinks_out_of_the_volume(
    engine: Engine, plugin: Plugin, names
) -> None:
    outside = plugin.root.parent / "outside"
    outside.mkdir()
    (outside / "precious").write_text("keep\n")
    try:
        vol = names("v")
        engine.docker("volume", "create", "-d", "dockvol", vol)
        # Symlinks written by a container resolve on the host when the plugin deletes.
        engine.docker(
            "run", "--rm", "--network", "none", "-v", f"{vol}:/data", "busybox:local", "sh", "-c",
            f"ln -s {outside} /data/abs && ln -s ../.. /data/up && mkdir /data/d"
            f" && ln -s {outside}/precious /data/d/file && echo x > /data/own",
        )  # fmt: skip
        vdir = Path(inspect(engine, vol)["Status"]["path"])
        assert (vdir / "own").exists()
        engine.docker("volume", "rm", vol)
        assert vol not in volume_names(engine)
        assert not os.path.lexists(vdir)
        assert (outside / "precious").read_text() == "keep\n"
        assert sorted(p.name for p in plugin.root.parent.iterdir()) == ["outside", "root"]
    finally:
        (outside / "precious").unlink(missing_ok=True)
        outside.rmdir()
