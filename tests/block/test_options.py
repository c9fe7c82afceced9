"""The block driver's option schema: only allow-listed values reach mkfs and mount."""

from __future__ import annotations

from pathlib import Path

import pytest

from dockvol import DriverError
from dockvol._sdk.options import parse_options
from dockvol.drivers.block import DRIVER, BlockDriver
from dockvol.drivers.block.driver import DEFAULT_SIZE
from dockvol.drivers.block.filesystems import (
    FILESYSTEMS,
    parse_mkfs_options,
    parse_mount_options,
)


def test_module_exports_the_driver_class_for_serve() -> None:
    assert DRIVER is BlockDriver
    assert BlockDriver.needs_mount_privileges is True


def test_defaults_are_documented_values() -> None:
    values = parse_options(BlockDriver.options, {})
    assert values["size"] == DEFAULT_SIZE == 10 << 30
    assert values["fs"] == "ext4"
    assert values["mountopts"] == () and values["mkfsopts"] == ()
    assert values["uid"] is None and values["gid"] is None and values["mode"] is None


def test_sizes_uids_and_modes_are_parsed() -> None:
    v = parse_options(
        BlockDriver.options, {"size": "512M", "uid": "1000", "gid": "50", "mode": "0750"}
    )
    assert (v["size"], v["uid"], v["gid"], v["mode"]) == (512 << 20, 1000, 50, 0o750)


def test_unknown_filesystem_is_refused() -> None:
    with pytest.raises(ValueError, match="choose one of: ext4, xfs"):
        parse_options(BlockDriver.options, {"fs": "btrfs"})


def test_allowed_mount_options_pass() -> None:
    assert parse_mount_options("noatime, discard,commit=30") == ("noatime", "discard", "commit=30")


@pytest.mark.parametrize(
    "text",
    [
        "exec",
        "remount",
        "noatime,ro",
        "suid",
        "commit",
        "noatime=1",
        "x-mount.mkdir",
        "loop=/dev/sda",
    ],
)
def test_other_mount_options_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="not allowed"):
        parse_mount_options(text)


def test_commit_applies_to_ext4_only_and_in_range() -> None:
    assert FILESYSTEMS["ext4"].mount_options(("noatime", "commit=30")) == "noatime,commit=30"
    with pytest.raises(DriverError, match="does not apply to xfs"):
        FILESYSTEMS["xfs"].mount_options(("commit=30",))
    with pytest.raises(DriverError, match="from 1 to 300"):
        FILESYSTEMS["ext4"].mount_options(("commit=0",))


def test_mkfs_options_become_fixed_arguments() -> None:
    opts = parse_mkfs_options("label=data,reserved=1,inode_ratio=16384,journal=no")
    args = FILESYSTEMS["ext4"].mkfs_args(Path("/x/v.img"), opts)
    assert args[-2:] == ["--", "/x/v.img"]
    assert args[args.index("-L") + 1] == "data"
    last_m = len(args) - 1 - args[::-1].index("-m")  # the user's -m comes after our default
    assert args[last_m + 1] == "1"
    assert "^has_journal" in args
    xfs = FILESYSTEMS["xfs"].mkfs_args(Path("/x/v.img"), parse_mkfs_options("reflink=0,label=db"))
    assert "reflink=0" in xfs and "db" in xfs


@pytest.mark.parametrize("text", ["-E=root_owner", "badkey=1", "label", "force=1"])
def test_unknown_mkfs_options_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="not allowed"):
        parse_mkfs_options(text)


@pytest.mark.parametrize(
    ("fs", "text", "match"),
    [
        ("ext4", "label=has space", "label is 1 to 16"),
        ("ext4", "label=$(reboot)", "label is 1 to 16"),
        ("ext4", "reserved=51", "from 0 to 50"),
        ("ext4", "inode_size=300", "one of 128, 256, 512, 1024"),
        ("ext4", "reflink=1", "does not apply to ext4"),
        ("xfs", "reserved=1", "does not apply to xfs"),
        ("xfs", "label=thirteenchars", "label is 1 to 12"),
        ("ext4", "journal=maybe", "yes or no"),
    ],
)
def test_bad_mkfs_values_are_refused_before_any_command(fs: str, text: str, match: str) -> None:
    with pytest.raises(DriverError, match=match):
        FILESYSTEMS[fs].mkfs_args(Path("/x/v.img"), parse_mkfs_options(text))
