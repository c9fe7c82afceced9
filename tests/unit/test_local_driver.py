"""The local driver never deletes outside a volume's own directory, nor through a mount."""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

import pytest

from dockvol import DriverError
from dockvol.drivers.local import LocalDriver
from tests.unit.local import make, mount_inside, precious, wait_until


def test_create_applies_owner_and_mode(driver: LocalDriver) -> None:
    vol = make("v", uid="1234", gid="4321", mode="0750")
    driver.create(vol)
    st = os.stat(driver.mount(vol))
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (1234, 4321, 0o750)


def test_default_mode_lets_container_users_in(driver: LocalDriver) -> None:
    vol = make("v")
    driver.create(vol)
    assert stat.S_IMODE(os.stat(driver.mount(vol)).st_mode) == 0o755


def test_a_traversal_name_stays_inside_root(driver: LocalDriver, tmp_path: Path) -> None:
    vol = make("../../escape")
    driver.create(vol)
    path = driver.mount(vol)
    assert path.parent == driver.root
    assert sorted(p.name for p in tmp_path.iterdir()) == ["root"]


def test_remove_does_not_follow_symlinks_out_of_the_volume(
    driver: LocalDriver, tmp_path: Path
) -> None:
    outside = precious(tmp_path / "precious")
    vol = make("v")
    driver.create(vol)
    (driver.mount(vol) / "link").symlink_to(outside)
    driver.remove(vol)
    assert not (driver.root / vol.key).exists()
    assert (outside / "keep.txt").read_text() == "data"


def test_remove_refuses_a_volume_directory_swapped_for_a_symlink(
    driver: LocalDriver, tmp_path: Path
) -> None:
    outside = precious(tmp_path / "precious")
    vol = make("v")
    driver.create(vol)
    path = driver.root / vol.key
    path.rmdir()
    path.symlink_to(outside)
    with pytest.raises(DriverError, match="not a plain directory"):
        driver.remove(vol)
    assert (outside / "keep.txt").read_text() == "data"


def test_remove_refuses_to_delete_through_a_live_mount(driver: LocalDriver, tmp_path: Path) -> None:
    src = tmp_path / "mounted-src"
    vol, target = mount_inside(driver, src)
    try:
        with pytest.raises(DriverError, match="still mounted"):
            driver.remove(vol)
        assert (src / "keep.txt").read_text() == "data"
    finally:
        subprocess.run(["umount", str(target)], check=True)
    driver.remove(vol)
    assert (src / "keep.txt").read_text() == "data"


def test_retain_keeps_the_data(driver: LocalDriver) -> None:
    vol = make("v", on_remove="retain")
    driver.create(vol)
    (driver.mount(vol) / "f").write_text("kept")
    driver.remove(vol)
    assert (driver.root / vol.key / "f").read_text() == "kept"


def test_recover_recreates_a_directory_lost_between_registry_and_create(
    driver: LocalDriver,
) -> None:
    vol = make("v", mode="0700")
    assert driver.recover(vol, None) is None
    assert stat.S_IMODE(os.stat(driver.root / vol.key).st_mode) == 0o700


def test_adopted_data_keeps_its_retain(driver: LocalDriver) -> None:
    first = make("v", on_remove="retain")
    driver.create(first)
    (driver.mount(first) / "f").write_text("kept")
    driver.remove(first)
    again = make("v")  # no options: adopts the data, and with it the retain
    driver.create(again)
    assert (driver.mount(again) / "f").read_text() == "kept"
    assert driver.status(again, None)["on_remove"] == "retain"
    driver.remove(again)
    assert (driver.root / again.key / "f").read_text() == "kept"


def test_an_explicit_delete_ends_the_retain(driver: LocalDriver) -> None:
    first = make("v", on_remove="retain")
    driver.create(first)
    (driver.mount(first) / "f").write_text("kept")
    driver.remove(first)
    again = make("v", on_remove="delete")
    driver.create(again)
    assert driver.status(again, None)["on_remove"] == "delete"
    driver.remove(again)
    assert not (driver.root / again.key).exists()
    assert wait_until(lambda: not any((driver.root / ".trash").iterdir()))
    third = make("v")  # nothing retained any more: a fresh, empty volume that deletes
    driver.create(third)
    assert list(driver.mount(third).iterdir()) == []
    assert driver.status(third, None)["on_remove"] == "delete"


def test_remove_takes_the_data_away_at_once_and_deletes_it_after(driver: LocalDriver) -> None:
    vol = make("v")
    driver.create(vol)
    (driver.mount(vol) / "big").write_bytes(b"x" * 4096)
    driver.remove(vol)
    assert not (driver.root / vol.key).exists()  # gone under its name before remove returns
    assert wait_until(lambda: not any((driver.root / ".trash").iterdir()))


def test_trash_left_by_a_crash_is_deleted_at_start(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / ".trash" / "v-1234.abcd").mkdir(parents=True)
    (root / ".trash" / "v-1234.abcd" / "f").write_text("removed")
    d = LocalDriver(root)
    d.setup()
    assert wait_until(lambda: not any((root / ".trash").iterdir()))
    assert d.audit([]) == []  # trash and marks are not reported as foreign data
