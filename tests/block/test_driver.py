"""The block driver against the real kernel: loop devices, ext4/xfs, mounts (needs root)."""

from __future__ import annotations

import errno
import os
import re
import subprocess
from pathlib import Path

import pytest

from dockvol import DriverError
from dockvol.drivers.block import BlockDriver, loop, mounttable
from dockvol.drivers.block.commands import run
from dockvol.drivers.block.filesystems import probe

from .conftest import Holder, MakeVolume, wait_for

MiB = 1 << 20
FS_SIZES = [("ext4", "32M"), ("xfs", "300M")]


def fill(directory: Path) -> int:
    """Write until the filesystem refuses; the bytes written (raises if it never refuses)."""
    written = 0
    chunk = b"\1" * MiB
    with open(directory / "fill", "wb") as f:
        try:
            for _ in range(4096):
                f.write(chunk)
                f.flush()
                os.fsync(f.fileno())
                written += len(chunk)
        except OSError as exc:
            assert exc.errno == errno.ENOSPC, exc
            return written
    raise AssertionError("4 GiB written to a small volume without ENOSPC")


def fs_bytes(mp: Path) -> int:
    st = os.statvfs(mp)
    return st.f_blocks * st.f_frsize


def test_image_is_sparse_and_named_by_key_never_by_name(
    driver: BlockDriver, make_volume: MakeVolume
) -> None:
    v = make_volume("../../etc/a b", size="1G")
    driver.create(v)
    image = driver.image_path(v)
    assert image.parent == driver.images and image.name == f"{v.key}.img"
    assert "/" not in image.name and ".." not in image.name
    st = image.stat()
    assert 1 << 30 < st.st_size < 1.1 * (1 << 30)  # the size plus the filesystem's overhead
    assert st.st_blocks * 512 < 64 * MiB  # sparse: lazy init wrote only metadata
    assert probe(image) == "ext4"
    assert loop.backing(image) == []  # create does not attach
    driver.remove(v)
    assert not image.exists()


@pytest.mark.parametrize(("fs", "size"), FS_SIZES)
def test_mount_attaches_once_and_fills_to_enospc(
    driver: BlockDriver, make_volume: MakeVolume, fs: str, size: str
) -> None:
    v = make_volume(f"fill-{fs}", size=size, fs=fs)
    driver.create(v)
    mp = driver.mount(v)
    try:
        assert mp == driver.mountpoint(v)
        [lp] = loop.backing(driver.image_path(v))
        entry = mounttable.mounted_at(mp)
        assert entry is not None and entry.devnum == lp.devnum and entry.fstype == fs
        assert driver.mount(v) == mp  # repeated mount: same attachment, no second device
        assert [x.device for x in loop.backing(driver.image_path(v))] == [lp.device]
        status = driver.status(v, mp)
        assert status["attached"] is True and status["device"] == lp.device
        assert status["fs"] == fs and status["size"] == int(size[:-1]) * MiB
        image_size = driver.image_path(v).stat().st_size
        written = fill(mp)
        assert 0 < written <= int(size[:-1]) * MiB
        assert driver.image_path(v).stat().st_size == image_size  # the host file did not grow
        assert driver.status(v, mp)["free"] < MiB
    finally:
        driver.unmount(v)
    assert loop.backing(driver.image_path(v)) == []
    assert mounttable.mounted_at(mp) is None
    status = driver.status(v, None)
    assert status["attached"] is False and "device" not in status
    driver.remove(v)


def test_volumes_mounted_in_parallel_get_their_own_devices(
    driver: BlockDriver, make_volume: MakeVolume
) -> None:
    from concurrent.futures import ThreadPoolExecutor

    vols = [make_volume(f"par{i}", size="32M") for i in range(4)]
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(driver.create, vols))
        mps = list(pool.map(driver.mount, vols))
    try:
        devices = [loop.backing(driver.image_path(v)) for v in vols]
        assert all(len(d) == 1 for d in devices)
        assert len({d[0].device for d in devices}) == 4
        for v, mp in zip(vols, mps, strict=True):
            (mp / "name").write_text(v.name)
    finally:
        with ThreadPoolExecutor(4) as pool:
            list(pool.map(driver.unmount, vols))
    for v in vols:
        assert loop.backing(driver.image_path(v)) == []
        driver.remove(v)


def test_data_survives_unmount_and_mount(driver: BlockDriver, make_volume: MakeVolume) -> None:
    v = make_volume("keep", size="32M")
    driver.create(v)
    (driver.mount(v) / "f").write_text("kept")
    driver.unmount(v)
    try:
        assert (driver.mount(v) / "f").read_text() == "kept"
    finally:
        driver.unmount(v)
    driver.remove(v)


def test_owner_and_mode_apply_to_the_top_directory(
    driver: BlockDriver, make_volume: MakeVolume
) -> None:
    v = make_volume("owned", size="32M", uid="1234", gid="2345", mode="0750")
    driver.create(v)
    mp = driver.mount(v)
    try:
        st = mp.stat()
        assert (st.st_uid, st.st_gid, st.st_mode & 0o7777) == (1234, 2345, 0o750)
        assert (
            list(mp.iterdir()) == []
        )  # no lost+found: the engine copies image data into empty volumes
    finally:
        driver.unmount(v)
    driver.remove(v)


def test_remove_refuses_while_attached(driver: BlockDriver, make_volume: MakeVolume) -> None:
    v = make_volume("busy", size="32M")
    driver.create(v)
    mp = driver.mount(v)
    (mp / "data").write_text("x")
    try:
        with pytest.raises(DriverError, match="still attached"):
            driver.remove(v)
        assert driver.image_path(v).exists() and (mp / "data").exists()
    finally:
        driver.unmount(v)
    driver.remove(v)
    assert not driver.image_path(v).exists() and not mp.exists()


def test_remove_never_deletes_through_a_live_mount(
    driver: BlockDriver, make_volume: MakeVolume
) -> None:
    v = make_volume("live", size="32M")
    driver.create(v)
    mp = driver.mountpoint(v)
    mp.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "tmpfs", str(mp)], check=True)
    try:
        (mp / "precious").write_text("x")
        with pytest.raises(DriverError, match="refusing to delete through a live mount"):
            driver.remove(v)
        assert (mp / "precious").exists() and driver.image_path(v).exists()
    finally:
        subprocess.run(["umount", str(mp)], check=True)
    driver.remove(v)


@pytest.mark.parametrize(("fs", "size"), FS_SIZES)
def test_resize_while_detached_grows_the_filesystem(
    driver: BlockDriver, make_volume: MakeVolume, fs: str, size: str
) -> None:
    v = make_volume(f"grow-{fs}", size=size, fs=fs)
    driver.create(v)
    before = fs_bytes(driver.mount(v))
    driver.unmount(v)
    driver.resize(v, 2 * driver.image_path(v).stat().st_size, None)
    assert loop.backing(driver.image_path(v)) == []  # a detached volume stays detached
    try:
        after = fs_bytes(driver.mount(v))
    finally:
        driver.unmount(v)
    assert after > before * 1.8
    driver.remove(v)


@pytest.mark.parametrize(("fs", "size"), FS_SIZES)
def test_resize_while_attached(
    driver: BlockDriver, make_volume: MakeVolume, fs: str, size: str
) -> None:
    v = make_volume(f"live-{fs}", size=size, fs=fs)
    driver.create(v)
    mp = driver.mount(v)
    before = fs_bytes(mp)
    try:
        try:
            driver.resize(v, 2 * driver.image_path(v).stat().st_size, mp)
        except DriverError as exc:
            # Online ext4 growth needs CAP_SYS_RESOURCE: then the filesystem grows at next attach.
            assert fs == "ext4" and "CAP_SYS_RESOURCE" in str(exc), exc
            driver.unmount(v)
            driver.mount(v)
        assert fs_bytes(mp) > before * 1.8
        assert driver.status(v, mp)["attached"] is True
    finally:
        driver.unmount(v)
    driver.remove(v)


def test_shrinking_is_refused(driver: BlockDriver, make_volume: MakeVolume) -> None:
    v = make_volume("shrink", size="64M")
    driver.create(v)
    before = driver.image_path(v).stat().st_size
    with pytest.raises(DriverError, match="shrinking is not supported"):
        driver.resize(v, 32 * MiB, None)
    assert driver.image_path(v).stat().st_size == before
    driver.remove(v)


def test_too_small_for_xfs_is_refused(driver: BlockDriver, make_volume: MakeVolume) -> None:
    with pytest.raises(DriverError, match="too small for xfs: use at least 300M"):
        driver.create(make_volume("tiny", size="100M", fs="xfs"))


def test_recover_after_a_crash_keeps_the_mount_in_use(
    root: Path, driver: BlockDriver, make_volume: MakeVolume
) -> None:
    v = make_volume("crash", size="32M")
    driver.create(v)
    mp = driver.mount(v)
    (mp / "f").write_text("before")
    [lp] = loop.backing(driver.image_path(v))
    fd = os.open(mp / "f", os.O_RDONLY)  # a "container" still using the volume
    try:
        after = BlockDriver(root)  # the plugin restarted: nothing in memory
        after.setup()
        assert after.recover(v, mp) == mp
        assert [x.device for x in loop.backing(after.image_path(v))] == [lp.device]
        assert os.read(fd, 100) == b"before"
        assert after.status(v, mp)["device"] == lp.device
        assert after.unclaimed() == {}
    finally:
        os.close(fd)
    after.unmount(v)
    assert loop.backing(after.image_path(v)) == []
    after.remove(v)


def test_recover_repairs_a_record_whose_device_is_gone(
    root: Path, driver: BlockDriver, make_volume: MakeVolume
) -> None:
    v = make_volume("gone", size="32M")
    driver.create(v)
    mp = driver.mount(v)
    (mp / "f").write_text("data")
    [lp] = loop.backing(driver.image_path(v))
    subprocess.run(["umount", str(mp)], check=True)
    assert loop.detach(lp.device, driver.image_path(v))
    after = BlockDriver(root)
    after.setup()
    assert after.recover(v, mp) == mp
    try:
        assert (mp / "f").read_text() == "data"
        assert after.status(v, mp)["attached"] is True
    finally:
        after.unmount(v)
    after.remove(v)


def test_recover_releases_what_no_record_uses(
    root: Path, driver: BlockDriver, make_volume: MakeVolume
) -> None:
    v = make_volume("stale", size="32M")
    driver.create(v)
    mp = driver.mount(v)
    after = BlockDriver(root)
    after.setup()
    assert after.recover(v, None) is None  # the record says: nobody uses it
    assert loop.backing(after.image_path(v)) == [] and mounttable.mounted_at(mp) is None
    assert after.unclaimed() == {}
    after.remove(v)


def test_unrecorded_mounts_are_released_only_when_provably_unused(
    root: Path, driver: BlockDriver, make_volume: MakeVolume
) -> None:
    used, idle = make_volume("used", size="32M"), make_volume("idle", size="32M")
    for v in (used, idle):
        driver.create(v)
        driver.mount(v)
    [used_dev] = [lp.device for lp in loop.backing(driver.image_path(used))]
    fd = os.open(driver.mountpoint(used) / ".", os.O_RDONLY)  # a process still in it
    try:
        after = BlockDriver(root)  # restarted with no records for either volume
        after.setup()
        assert after.unclaimed() == {used.key: used_dev}  # reported, left alone
        assert loop.backing(after.image_path(idle)) == []  # released
        assert mounttable.mounted_at(after.mountpoint(used)) is not None
    finally:
        os.close(fd)
    after.unmount(used)
    for v in (used, idle):
        after.remove(v)


def test_audit_reports_images_no_volume_explains_and_drops_interrupted_creates(
    root: Path, driver: BlockDriver, make_volume: MakeVolume
) -> None:
    known, lost = make_volume("known", size="32M"), make_volume("lost", size="32M")
    driver.create(known)
    driver.create(lost)
    partial = driver.images / "half-0123456789abcdef.img.new"
    partial.write_bytes(b"")
    after = BlockDriver(root)
    after.setup()
    problems = after.audit([known])
    assert len(problems) == 1 and str(after.image_path(lost)) in problems[0]
    assert "create the volume again" in problems[0]
    assert after.image_path(lost).exists()  # reported, never deleted: it may hold data
    assert not partial.exists()
    for v in (known, lost):
        after.remove(v)


def test_recover_never_detaches_under_another_namespace(
    root: Path, driver: BlockDriver, make_volume: MakeVolume, namespace_holder: Holder
) -> None:
    v = make_volume("held", size="32M")
    driver.create(v)
    mp = driver.mount(v)
    [lp] = loop.backing(driver.image_path(v))
    holder = namespace_holder()  # holds a copy of the mount, as a container does
    assert holder.pid in mounttable.other_namespaces_using(lp.devnum)
    after = BlockDriver(root)
    after.setup()
    assert after.recover(v, None) is None  # no record uses it...
    assert [x.device for x in loop.backing(after.image_path(v))] == [lp.device]  # ...but kept
    assert after.status(v, None)["attached"] is True
    assert after.mount(v) == mp  # the next mount reuses it
    holder.kill()
    holder.wait()
    after.unmount(v)
    wait_for("the device to be freed", lambda: not loop.backing(after.image_path(v)))
    after.remove(v)


def test_remove_waits_for_a_namespace_that_kept_a_copy_of_the_mount(
    driver: BlockDriver, make_volume: MakeVolume, namespace_holder: Holder
) -> None:
    v = make_volume("copied", size="32M")
    driver.create(v)
    driver.mount(v)
    holder = namespace_holder()
    driver.unmount(v)  # our mount is gone; the copy keeps the filesystem (and device) alive
    with pytest.raises(DriverError, match=rf"still held by processes \[{holder.pid}\]"):
        driver.remove(v)
    assert driver.image_path(v).exists()
    holder.kill()
    holder.wait()
    # The kernel frees the device by itself once the copy goes: nothing leaks.
    wait_for("the device to be freed", lambda: not loop.backing(driver.image_path(v)))
    driver.remove(v)


def test_setup_detaches_loop_devices_nothing_holds(
    root: Path, driver: BlockDriver, make_volume: MakeVolume
) -> None:
    v = make_volume("orphan", size="32M")
    driver.create(v)
    loop.attach(driver.image_path(v))  # a crash between losetup and mount
    assert len(loop.backing(driver.image_path(v))) == 1
    BlockDriver(root).setup()
    assert loop.backing(driver.image_path(v)) == []
    driver.remove(v)


def test_create_adopts_a_matching_leftover_image_and_refuses_others(
    root: Path, driver: BlockDriver, make_volume: MakeVolume
) -> None:
    v = make_volume("left", size="32M")
    driver.create(v)
    (driver.mount(v) / "f").write_text("old data")
    driver.unmount(v)
    driver.create(v)  # state lost, same volume created again: the data is kept
    try:
        assert (driver.mount(v) / "f").read_text() == "old data"
    finally:
        driver.unmount(v)
    with pytest.raises(DriverError, match=r"already exists .* -o size=32M to keep its data"):
        driver.create(make_volume("left", size="64M"))
    driver.remove(v)


def test_a_failed_mount_says_what_to_do_and_leaks_no_device(
    driver: BlockDriver, make_volume: MakeVolume
) -> None:
    v = make_volume("broken", size="32M")
    driver.create(v)
    with open(driver.image_path(v), "r+b") as f:  # wipe the superblock
        f.seek(1024)
        f.write(b"\0" * 4096)
    with pytest.raises(
        DriverError, match=r"mounting volume 'broken' .*bad superblock.*\(e2fsck -f /.*\.img\)"
    ):
        driver.mount(v)
    assert loop.backing(driver.image_path(v)) == []
    driver.remove(v)


def test_status_runs_no_subprocess(
    driver: BlockDriver, make_volume: MakeVolume, monkeypatch: pytest.MonkeyPatch
) -> None:
    v = make_volume("cheap", size="32M")
    driver.create(v)
    mp = driver.mount(v)
    try:
        with monkeypatch.context() as m:
            m.setattr(subprocess, "run", None)
            m.setattr(subprocess, "Popen", None)
            attached = driver.status(v, mp)
        assert attached["attached"] is True and attached["used"] >= 0
    finally:
        driver.unmount(v)
    with monkeypatch.context() as m:
        m.setattr(subprocess, "Popen", None)
        assert driver.status(v, None)["size"] == 32 * MiB
    driver.remove(v)


def test_status_says_when_the_mount_went_away_behind_its_back(
    driver: BlockDriver, make_volume: MakeVolume
) -> None:
    v = make_volume("vanished", size="32M")
    driver.create(v)
    mp = driver.mount(v)
    subprocess.run(["umount", str(mp)], check=True)
    status = driver.status(v, mp)
    assert status["attached"] is False and "no longer mounted" in status["problem"]
    assert "used" not in status  # never the host's disk figures
    assert driver.mount(v) == mp  # repaired: the device is still attached, mounted again
    assert driver.status(v, mp)["attached"] is True
    driver.unmount(v)
    driver.remove(v)


def test_missing_commands_become_driver_errors() -> None:
    with pytest.raises(DriverError, match="'no-such-tool' is not installed"):
        run(["no-such-tool"], what="testing", hint="none")
    with pytest.raises(DriverError, match=r"testing failed: false: exit status 1; do this"):
        run(["false"], what="testing", hint="do this")


def test_recover_creates_the_image_of_a_record_that_has_none(
    root: Path, driver: BlockDriver, make_volume: MakeVolume
) -> None:
    # The service records a volume before the driver creates it: a crash in between.
    v = make_volume("late", size="32M", fs="ext4")
    assert driver.recover(v, None) is None
    assert probe(driver.image_path(v)) == "ext4"
    with pytest.raises(DriverError, match="image of volume 'late-mounted' is missing"):
        driver.recover(make_volume("late-mounted", size="32M"), driver.mountpoint(v))
    driver.remove(v)


def test_ext4_leaves_no_inode_tables_to_zero_after_mount(
    driver: BlockDriver, make_volume: MakeVolume
) -> None:
    v = make_volume("zeroed", size="1G")
    driver.create(v)
    out = subprocess.run(
        ["dumpe2fs", str(driver.image_path(v))], capture_output=True, text=True, check=True
    ).stdout
    groups = len(re.findall(r"^Group \d+:", out, re.MULTILINE))
    assert groups > 1 and out.count("ITABLE_ZEROED") == groups
    driver.remove(v)
