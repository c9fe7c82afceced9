"""Create and Remove on the fast path stay safe: quick writes on the event loop, an empty volume
removed by one rmdir, the mount table read again only when it changed, and kill -9 at the one
point where a quick Remove is half done."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import ClassVar

import pytest

from dockvol import DriverError, Volume
from dockvol._cluster.registry import EtcdRegistry
from dockvol._registry.memory import MemoryRegistry
from dockvol._registry.sqlite import SqliteRegistry
from dockvol._service.service import VolumeService
from dockvol.drivers.local import LocalDriver
from dockvol.drivers.shared import SharedDriver
from dockvol.host import mounts_under
from tests.unit.local import make, mount_inside, wait_until


def _unmount_all(under: Path) -> None:
    for target in sorted(mounts_under(under), reverse=True):  # deepest first
        subprocess.run(["umount", target], check=True)


# -- the local driver's remove -------------------------------------------------------------------
def test_an_empty_volume_is_removed_at_once_with_nothing_left_for_later(
    driver: LocalDriver,
) -> None:
    vol = make("v")
    driver.create(vol)
    driver.remove(vol)
    assert not (driver.root / vol.key).exists()
    trash = driver.root / ".trash"
    assert not trash.exists() or list(trash.iterdir()) == []


def test_a_volume_with_data_goes_to_the_trash_and_is_deleted_after(driver: LocalDriver) -> None:
    vol = make("v")
    driver.create(vol)
    (driver.mount(vol) / "f").write_text("x")
    driver.remove(vol)
    assert not (driver.root / vol.key).exists()
    assert wait_until(lambda: not any((driver.root / ".trash").iterdir()))


def test_a_mount_made_after_the_table_was_read_still_stops_remove(
    driver: LocalDriver, tmp_path: Path
) -> None:
    # A first remove reads (and keeps) the mount table; the mount comes after it.
    first = make("first")
    driver.create(first)
    (driver.mount(first) / "f").write_text("x")
    driver.remove(first)

    src = tmp_path / "src"
    vol, _ = mount_inside(driver, src)
    try:
        with pytest.raises(DriverError, match="still mounted"):
            driver.remove(vol)
        assert (src / "keep.txt").read_text() == "data"
    finally:
        _unmount_all(tmp_path)  # wherever a failed check moved it
    driver.remove(vol)  # the unmount is seen too
    assert not (driver.root / vol.key).exists()
    assert (src / "keep.txt").read_text() == "data"


def test_an_empty_volume_that_is_a_mount_point_is_not_removed(
    driver: LocalDriver, tmp_path: Path
) -> None:
    src = tmp_path / "empty-src"
    src.mkdir()
    vol = make("v")
    driver.create(vol)
    path = driver.mount(vol)
    subprocess.run(["mount", "--bind", str(src), str(path)], check=True)
    try:
        with pytest.raises(DriverError, match="still mounted"):
            driver.remove(vol)
        assert path.is_dir() and src.is_dir()
    finally:
        _unmount_all(tmp_path)


# -- where the service runs writes ---------------------------------------------------------------
class _Recording(LocalDriver):
    """Records the thread each create ran on."""

    threads: ClassVar[list[int]] = []

    def create(self, volume: Volume) -> None:
        self.threads.append(threading.get_ident())
        super().create(volume)


class _QuickRecording(_Recording):
    quick_writes: ClassVar[bool] = True


def test_quick_writes_are_declared_not_inherited() -> None:
    assert SqliteRegistry.quick_writes
    assert not EtcdRegistry.quick_writes  # its writes wait on the network
    assert LocalDriver.quick_writes
    assert not SharedDriver.quick_writes  # its root is a network filesystem
    assert not _Recording.quick_writes
    assert _QuickRecording.quick_writes


@pytest.mark.parametrize(
    ("cls", "registry", "on_loop"),
    [
        (_QuickRecording, "sqlite", True),
        (_Recording, "sqlite", False),  # the driver does not say its writes are quick
        (_QuickRecording, "memory", False),  # the registry does not say so
    ],
)
def test_the_service_runs_only_quick_writes_on_its_event_loop(
    tmp_path: Path, cls: type[_Recording], registry: str, on_loop: bool
) -> None:
    drv = cls(tmp_path / "root")
    drv.setup()
    reg = SqliteRegistry(tmp_path / "state") if registry == "sqlite" else MemoryRegistry()
    svc = VolumeService(drv, reg)
    cls.threads.clear()
    try:
        asyncio.run(svc.create("v", {}))
    finally:
        svc.close()
    assert (cls.threads == [threading.get_ident()]) is on_loop, cls.threads


# -- kill -9 inside a quick Create or Remove ---------------------------------------------------
_KILLED = """
import asyncio, os, signal, sys
from pathlib import Path
from dockvol._registry.sqlite import SqliteRegistry
from dockvol._service.service import VolumeService
from dockvol.drivers.local import LocalDriver
base, where, content = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
drv = LocalDriver(base / "root")
drv.setup()
reg = SqliteRegistry(base / "state")
svc = VolumeService(drv, reg)
svc.reconcile()
assert svc._inline_writes
def killed(*args):
    os.kill(os.getpid(), signal.SIGKILL)
if where == "create":  # the registry has committed the record; the driver has not run
    drv.create = killed
    asyncio.run(svc.create("v", {}))
asyncio.run(svc.create("v", {}))
if content == "data":
    (base / "root" / reg.get("v").key / "f").write_text("x")
reg.delete = killed  # the driver has removed the data; the registry has not committed yet
asyncio.run(svc.remove("v"))
"""


@pytest.mark.parametrize(
    ("where", "content"), [("create", "empty"), ("remove", "empty"), ("remove", "data")]
)
def test_kill_9_between_the_registry_and_the_driver_leaves_a_whole_volume(
    tmp_path: Path, where: str, content: str
) -> None:
    proc = subprocess.run(
        [sys.executable, "-c", _KILLED, str(tmp_path), where, content],
        capture_output=True,
        timeout=60,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr

    drv = LocalDriver(tmp_path / "root")
    drv.setup()
    svc = VolumeService(drv, SqliteRegistry(tmp_path / "state"))
    try:
        health = svc.reconcile()
        assert health.problems == []
        # Neither the Create nor the Remove was confirmed, and the engine retries both: the
        # volume is there, whole and usable (a removed one's data was on its way out, so it
        # comes back empty), and the retry completes.
        assert svc.get("v") is not None
        path = drv.mount(svc.volume("v"))
        assert path.is_dir() and list(path.iterdir()) == []
        trash = drv.root / ".trash"
        assert wait_until(lambda: not trash.exists() or not any(trash.iterdir()))
        asyncio.run(svc.create("v", {}))  # the engine's retried Create succeeds too
        asyncio.run(svc.remove("v"))
        assert svc.get("v") is None
        assert not path.exists()
    finally:
        svc.close()
    assert SqliteRegistry(tmp_path / "state").get("v") is None
    assert os.listdir(drv.root) in ([], [".trash"])
