"""The size is what containers get (docs/block.md), against the real kernel (root): ``df``
(statfs) shows at least the size and at most 1% more, a container can write all of it but the
filesystem's own reserve, and a resize keeps that."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from dockvol import DriverError
from dockvol.drivers.block import BlockDriver, sizing

from .conftest import MakeVolume, reserve

MiB = 1 << 20
GiB = 1 << 30


def df_size(mp: Path) -> int:
    st = os.statvfs(mp)
    return st.f_blocks * st.f_frsize


def write(path: Path, size: int) -> None:
    """Write ``size`` bytes and fsync them (raises ENOSPC if they do not fit)."""
    chunk = b"\1" * MiB
    with open(path, "wb") as f:
        left = size
        while left > 0:
            f.write(chunk[: min(left, MiB)])
            left -= MiB
        f.flush()
        os.fsync(f.fileno())


@pytest.mark.parametrize(
    ("fs", "size"), [("ext4", 64 * MiB), ("ext4", GiB), ("xfs", 300 * MiB), ("xfs", GiB)]
)
def test_df_shows_the_size_and_it_can_be_filled(
    driver: BlockDriver, make_volume: MakeVolume, fs: str, size: int
) -> None:
    v = make_volume(f"sized-{fs}", size=f"{size // MiB}M", fs=fs)
    driver.create(v)
    mp = driver.mount(v)
    try:
        assert size <= df_size(mp) <= size * 1.01
        write(mp / "data", size - reserve(fs, size))
        assert (mp / "data").stat().st_size == size - reserve(fs, size)
    finally:
        os.unlink(mp / "data")
        driver.unmount(v)
    driver.remove(v)


def test_ext4_reserves_no_blocks_for_root(driver: BlockDriver, make_volume: MakeVolume) -> None:
    v = make_volume("noroot", size="64M")
    driver.create(v)
    out = subprocess.run(
        ["dumpe2fs", "-h", str(driver.image_path(v))], capture_output=True, text=True, check=True
    ).stdout
    assert "Reserved block count:     0\n" in out, out
    driver.remove(v)


@pytest.mark.parametrize(("fs", "size", "grown"), [("ext4", "64M", GiB), ("xfs", "300M", GiB)])
def test_a_resized_volume_shows_at_least_its_new_size(
    driver: BlockDriver, make_volume: MakeVolume, fs: str, size: str, grown: int
) -> None:
    v = make_volume(f"regrow-{fs}", size=size, fs=fs)
    driver.create(v)
    driver.resize(v, grown, None)  # detached: ext4 offline, xfs mounted for the time of it
    grown_v = make_volume(f"regrow-{fs}", size=f"{grown // MiB}M", fs=fs)  # the service's record
    mp = driver.mount(grown_v)
    try:
        assert grown <= df_size(mp) <= grown * 1.01
    finally:
        driver.unmount(grown_v)
    driver.remove(grown_v)


def test_a_volume_from_before_the_overhead_was_added_is_adopted_and_can_be_grown(
    driver: BlockDriver, make_volume: MakeVolume
) -> None:
    """An image of exactly the size (made by an earlier version) is reused as it is; a resize
    to the same size gives it the whole size."""
    v = make_volume("legacy", size="64M")
    image = driver.image_path(v)
    with open(image, "xb") as f:
        f.truncate(64 * MiB)
    subprocess.run(["mkfs.ext4", "-q", "-F", "-m", "0", str(image)], check=True)
    driver.create(v)  # adopted
    mp = driver.mount(v)
    try:
        assert df_size(mp) < 64 * MiB
        (mp / "kept").write_text("data")
    finally:
        driver.unmount(v)
    driver.resize(v, 64 * MiB, None)
    mp = driver.mount(v)
    try:
        assert 64 * MiB <= df_size(mp) <= 64 * MiB * 1.01
        assert (mp / "kept").read_text() == "data"
    finally:
        driver.unmount(v)
    driver.remove(v)


def test_an_image_of_another_size_is_still_refused(
    driver: BlockDriver, make_volume: MakeVolume
) -> None:
    v = make_volume("other", size="128M")
    driver.create(v)
    with pytest.raises(DriverError, match=r"already exists .* -o size=128M to keep its data"):
        driver.create(make_volume("other", size="64M"))
    driver.create(v)  # the same size: adopted
    driver.remove(v)


def test_superblock_geometry_is_what_the_kernel_reports(
    driver: BlockDriver, make_volume: MakeVolume
) -> None:
    """sizing.py reads sizes from superblocks so that create needs no mount: they must be the
    kernel's own figures."""
    for fs, size in (("ext4", "100M"), ("xfs", "400M")):
        v = make_volume(f"geo-{fs}", size=size, fs=fs)
        driver.create(v)
        geo = sizing.geometry(driver.image_path(v))
        assert geo is not None
        mp = driver.mount(v)
        try:
            assert geo.usable == df_size(mp)
        finally:
            driver.unmount(v)
        driver.remove(v)


@pytest.mark.parametrize("fs", ["ext4", "xfs"])
def test_a_second_volume_of_the_same_recipe_is_made_once_and_is_as_exact(
    driver: BlockDriver, make_volume: MakeVolume, fs: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from dockvol.drivers.block import images

    size = 320 * MiB
    first = make_volume(f"first-{fs}", size="320M", fs=fs)
    driver.create(first)
    runs: list[str] = []
    real_run = images.run
    monkeypatch.setattr(
        images, "run", lambda args, **kw: runs.append(args[0]) or real_run(args, **kw)
    )
    second = make_volume(f"second-{fs}", size="320M", fs=fs)
    driver.create(second)
    assert len([r for r in runs if "mkfs" in r]) == 1  # the size that fitted first, reused
    for v in (first, second):
        mp = driver.mount(v)
        try:
            assert size <= df_size(mp) <= size * 1.01
        finally:
            driver.unmount(v)
        driver.remove(v)
