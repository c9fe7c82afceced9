"""The check at attach (docs/block.md, Lifecycle): an ext4 image that was not cleanly unmounted
or has recorded errors is checked with ``e2fsck -p`` before it is mounted; one that needs a
person is refused with the command to run. A clean image is mounted without any check."""

from __future__ import annotations

import logging
import subprocess

import pytest

from dockvol import DriverError
from dockvol.drivers.block import BlockDriver, loop, sizing

from .conftest import MakeVolume


def debugfs(image: str, request: str) -> None:
    subprocess.run(["debugfs", "-w", "-R", request, image], capture_output=True, check=True)


def test_a_clean_image_is_mounted_without_a_check(
    driver: BlockDriver, make_volume: MakeVolume, caplog: pytest.LogCaptureFixture
) -> None:
    v = make_volume("clean", size="32M")
    driver.create(v)
    assert not sizing.ext4_unclean(driver.image_path(v))
    with caplog.at_level(logging.WARNING):
        driver.mount(v)
    driver.unmount(v)
    assert "checking it" not in caplog.text
    assert not sizing.ext4_unclean(driver.image_path(v))  # a clean unmount leaves it clean
    driver.remove(v)


def test_an_image_with_recorded_errors_is_checked_and_repaired(
    driver: BlockDriver, make_volume: MakeVolume, caplog: pytest.LogCaptureFixture
) -> None:
    v = make_volume("errors", size="32M")
    driver.create(v)
    image = str(driver.image_path(v))
    debugfs(image, "ssv state 3")  # valid, with errors: what the kernel records on an error
    assert sizing.ext4_unclean(driver.image_path(v))
    with caplog.at_level(logging.WARNING):
        (driver.mount(v) / "f").write_text("x")
    driver.unmount(v)
    assert "not cleanly unmounted: checking it" in caplog.text
    assert not sizing.ext4_unclean(driver.image_path(v))
    driver.remove(v)


def test_an_image_that_needs_a_manual_repair_is_refused(
    driver: BlockDriver, make_volume: MakeVolume
) -> None:
    v = make_volume("broken", size="32M")
    driver.create(v)
    image = str(driver.image_path(v))
    debugfs(image, "clri <2>")  # the root directory's inode wiped
    debugfs(image, "ssv state 2")
    with pytest.raises(DriverError, match=rf"needs a manual repair: run e2fsck -f {image}"):
        driver.mount(v)
    assert loop.backing(driver.image_path(v)) == []  # nothing left attached
    driver.remove(v)
