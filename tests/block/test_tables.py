"""Reading the mount table and the loop devices without subprocesses."""

from __future__ import annotations

from pathlib import Path

from dockvol.drivers.block import loop, mounttable

MOUNTINFO = """\
22 1 253:0 / / rw,relatime shared:1 - ext4 /dev/vda rw
40 22 7:3 / /var/lib/x/mounts/my\\040vol-1 rw,relatime - ext4 /dev/loop3 rw
41 22 7:3 /sub /elsewhere rw,relatime master:5 - ext4 /dev/loop3 rw
42 40 7:4 / /var/lib/x/mounts/my\\040vol-1 rw,relatime - xfs /dev/loop4 rw
garbage line
"""


def test_mountinfo_is_parsed_with_escapes_and_optional_fields() -> None:
    entries = mounttable.parse(MOUNTINFO)
    assert [e.devnum for e in entries] == ["253:0", "7:3", "7:3", "7:4"]
    assert entries[1].target == "/var/lib/x/mounts/my vol-1"
    assert entries[2].root == "/sub" and entries[2].fstype == "ext4"
    assert entries[3].source == "/dev/loop4"


def test_topmost_mount_wins_and_mounts_of_a_device_are_found() -> None:
    entries = mounttable.parse(MOUNTINFO)
    top = mounttable.mounted_at(Path("/var/lib/x/mounts/my vol-1"), entries)
    assert top is not None and top.devnum == "7:4"
    assert [e.target for e in mounttable.mounts_of("7:3", entries)] == [
        "/var/lib/x/mounts/my vol-1",
        "/elsewhere",
    ]
    assert mounttable.mounted_at(Path("/nowhere"), entries) is None


def _fake_loop(sys_block: Path, n: int, backing: str | None) -> None:
    d = sys_block / f"loop{n}"
    d.mkdir(parents=True)
    (d / "dev").write_text(f"7:{n}\n")
    if backing is not None:
        (d / "loop").mkdir()
        (d / "loop" / "backing_file").write_text(backing + "\n")


def test_loop_devices_are_found_by_backing_file(tmp_path: Path) -> None:
    sys_block = tmp_path / "sys"
    images = tmp_path / "images"
    images.mkdir()
    img = images / "a.img"
    img.touch()
    _fake_loop(sys_block, 0, str(img))
    _fake_loop(sys_block, 1, None)  # free
    _fake_loop(sys_block, 2, str(images / "gone.img") + " (deleted)")
    _fake_loop(sys_block, 3, "/other/b.img")
    (sys_block / "vda").mkdir()
    assert [lp.device for lp in loop.attached(sys_block)] == [
        "/dev/loop0",
        "/dev/loop2",
        "/dev/loop3",
    ]
    [found] = loop.backing(img, sys_block)
    assert (found.device, found.devnum, found.deleted) == ("/dev/loop0", "7:0", False)
    under = loop.under(images, sys_block)
    assert [(lp.device, lp.deleted) for lp in under] == [
        ("/dev/loop0", False),
        ("/dev/loop2", True),
    ]
    assert loop.attached(tmp_path / "missing") == []
